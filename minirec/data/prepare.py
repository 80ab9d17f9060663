"""Build a dataset dir (train/valid/test .inter + item.json) from raw interactions.

    python -m minirec.data.prepare --interactions events.csv --items items.json --out data/mydata
    python -m minirec.data.prepare --sequences user_sequences.json --items item.json --out data/x \\
        --order_from data/Industrial_and_Scientific        # reproduces the shipped rows exactly

Flags: ``python -m minirec.data.prepare --help`` (:class:`PrepareConfig`).

Input: a CSV / JSONL of events (user, item, timestamp[, rating]), or per-user chronological
sequences (``{"user": [item, ...]}`` or ``{"user": [[item, timestamp], ...]}``), plus the
item metadata. Every user's sequence yields sliding windows: for each position t >= 1, the
history is the up-to ``max_history`` items before t and the target is item t.

Splits:
* ``chronological_global`` (MiniOneRec's): all windows of all users ordered by the target's
  time, then cut at int(0.8 n) and int(0.9 n). Ties keep input order (users as listed, then
  position), as a stable sort does. The order needs timestamps, or ``--order_from DIR``: an
  existing split whose rows give the order in which users' windows follow one another.
* ``leave_one_out``: per user, the last window is test, the one before valid, the rest train.

Reading and validation live in ``minirec.data.events``, k-core, windows, splits and writing in
``minirec.data.splits``; both are vectorised with pandas/numpy (on the CSV path the only
per-record loop is one streaming check that every record has the header's number of fields,
which pandas' ``usecols`` would not report), and produce the same files as the row-by-row
reader they replaced (``bench/prepare_scale.py`` measures both on a synthetic dump, checks the
outputs match).

Why ``--order_from``: the shipped Industrial ``user_sequences.json`` has no timestamps, and
the shipped rows interleave users by review time, which nothing in that file encodes (user
and item ids follow neither it nor any other key in the file). Per user, the shipped rows are
exactly that user's windows in sequence order, so the sequence of user ids in the shipped
files is all the ordering information there is; ``--order_from`` replays it.
"""

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from minirec.config import Config
from minirec.data.events import Events, parse_time, read_events, read_sequences
from minirec.data.splits import kcore_filter, read_order, split_global, split_leave_one_out, write_splits
from minirec.errors import MinirecError
from minirec.io import write_json, write_text
from minirec.sid.catalogue import load_items

log = logging.getLogger(__name__)

SPLIT_METHODS = ("chronological_global", "leave_one_out")


def filter_events(events: Events, source: str, start=None, end=None, min_rating=None, kcore: int = 0):
    """``[start, end)`` on time, ``rating >= min_rating`` (unrated events stay), k-core, then
    users with 2+ events (a window needs a history); returns the kept rows."""
    frame = events.frame
    if start is not None or end is not None:
        if not events.timed:
            raise MinirecError("--start/--end need timestamps; the sequences have none")
        lo = parse_time(start, "--start") if start is not None else float("-inf")
        hi = parse_time(end, "--end") if end is not None else float("inf")
        frame = frame[(frame["time"] >= lo) & (frame["time"] < hi)]
    if min_rating is not None:
        try:
            threshold = float(min_rating)
        except (TypeError, ValueError):
            raise MinirecError(f"--min_rating {min_rating!r}: use a number")
        frame = frame[frame["rating"].isna() | (frame["rating"] >= threshold)]
    if kcore:
        frame = kcore_filter(frame, kcore)
    counts = np.bincount(frame["user"].cat.codes.to_numpy(), minlength=len(frame["user"].cat.categories))
    frame = frame[counts[frame["user"].cat.codes.to_numpy()] >= 2]
    if not len(frame):
        raise MinirecError(f"{source}: no user has 2 or more interactions after filtering; loosen --kcore/--start/--end")
    return frame


@dataclass
class PrepareConfig(Config):
    out: str
    """The dataset dir to write: {train,valid,test}.inter, item.json, prepare.json."""
    items: str
    """item.json of the catalogue (item id -> {"title", "description", ...})."""
    interactions: str = ""
    """Events file, .csv or .jsonl: user, item, timestamp[, rating] (aliases such as parent_asin work)."""
    sequences: str = ""
    """Instead of --interactions: JSON {"user": [item, ...]} or {"user": [[item, timestamp], ...]}."""
    split: str = "chronological_global"
    """chronological_global (all windows by target time, cut 80/10/10) or leave_one_out (per user)."""
    kcore: int = 0
    """Drop users and items with fewer than N interactions, repeatedly (0 = keep all)."""
    max_history: int = 10
    """Keep at most this many items before each target."""
    start: str = ""
    """Keep events at or after this time: unix seconds or an ISO date such as 2018-11-30."""
    end: str = ""
    """Keep events before this time (same forms as --start)."""
    min_rating: float | None = None
    """Keep events rated at least this (events without a rating stay)."""
    order_from: str = ""
    """A split dir whose rows give the global order, for sequences without timestamps."""

    def validate(self) -> None:
        if bool(self.interactions) == bool(self.sequences):
            raise MinirecError("pass exactly one of --interactions FILE / --sequences FILE")
        if self.split not in SPLIT_METHODS:
            raise MinirecError(f"--split {self.split!r}: choose one of {', '.join(SPLIT_METHODS)}")
        if self.max_history < 1:
            raise MinirecError(f"--max_history {self.max_history}: use a positive integer")
        if self.kcore < 0:
            raise MinirecError(f"--kcore {self.kcore}: use a non-negative integer (0 = no filtering)")
        if self.order_from and self.split != "chronological_global":
            raise MinirecError("--order_from only applies to --split chronological_global")
        if self.min_rating is not None and self.sequences:
            raise MinirecError("--min_rating needs rated events (--interactions); sequences have no ratings")

    def output(self):
        return "--out", self.out

    def check_paths(self) -> None:
        if any((Path(self.out) / f"{s}.{x}").exists() for s in ("train", "valid", "test") for x in ("inter", "csv")):
            raise MinirecError(f"--out {self.out} already holds a dataset; pass a new dir (nothing was changed)")


def prepare(**options) -> dict:
    """:func:`main` for Python callers: keyword arguments are the flags of :class:`PrepareConfig`."""
    return main(PrepareConfig.checked(**options))


def main(config: PrepareConfig) -> dict:
    """Build a dataset dir (train/valid/test .inter + item.json) from raw interactions or user sequences.

    Writes OUT/{train,valid,test}.inter, OUT/item.json and OUT/prepare.json; returns the summary.
    """
    out, items, split, kcore, max_history = config.out, config.items, config.split, config.kcore, config.max_history
    interactions, sequences = config.interactions or None, config.sequences or None
    start, end, min_rating = config.start or None, config.end or None, config.min_rating
    order_from = config.order_from or None
    out, items_path = Path(out), Path(items)
    catalogue = load_items(items_path)

    events = read_events(interactions) if interactions is not None else read_sequences(sequences)
    source = str(interactions if interactions is not None else sequences)
    unknown = sorted(set(events.frame["item"].cat.categories) - set(catalogue))
    if unknown:
        raise MinirecError(f"{source}: {len(unknown)} item id(s) not in {items_path}, e.g. {unknown[:5]}; "
                           "add their metadata or drop those interactions")
    frame = filter_events(events, source, start=start, end=end, min_rating=min_rating, kcore=kcore)

    if split == "leave_one_out":
        splits = split_leave_one_out(frame)
    else:
        splits = split_global(frame, events.timed, read_order(order_from) if order_from is not None else None)
    if not all(len(rows) for rows in splits.values()):
        raise MinirecError(f"{source}: too few windows for non-empty train/valid/test ({ {k: len(v) for k, v in splits.items()} })")

    out.mkdir(parents=True, exist_ok=True)
    write_splits(out, frame, splits, max_history)
    used = set(frame["item"].cat.categories[np.unique(frame["item"].cat.codes.to_numpy())])
    if used == set(catalogue):
        if items_path.resolve() != (out / "item.json").resolve():
            shutil.copyfile(items_path, out / "item.json")
    else:
        write_text(out / "item.json", json.dumps({i: m for i, m in catalogue.items() if i in used}, ensure_ascii=False, indent=2))
    summary = {
        "source": source, "items_file": str(items_path), "split": split, "max_history": max_history,
        "kcore": kcore, "start": start, "end": end, "min_rating": min_rating,
        "order_from": str(order_from) if order_from is not None else None,
        "users": len(np.unique(frame["user"].cat.codes.to_numpy())), "items": len(used), "interactions": len(frame),
        "rows": {k: len(v) for k, v in splits.items()},
    }
    write_json(out / "prepare.json", summary)
    print(f"{out}: {summary['users']} users, {summary['items']} items, rows {summary['rows']}")
    print(f"next: python -m minirec.sid build --items {out / 'item.json'} --out {out / 'index.json'}")
    return summary


if __name__ == "__main__":
    from minirec.cli import Command, run

    run(Command("-m minirec.data.prepare", PrepareConfig, main))
