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

Why ``--order_from``: the shipped Industrial ``user_sequences.json`` has no timestamps, and
the shipped rows interleave users by review time, which nothing in that file encodes (user
and item ids follow neither it nor any other key in the file). Per user, the shipped rows are
exactly that user's windows in sequence order, so the sequence of user ids in the shipped
files is all the ordering information there is; ``--order_from`` replays it.
"""

import csv
import io
import json
import logging
import shutil
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from minirec.cli import Command, run_cli
from minirec.data.readers import Interaction, check_csv_row, write_inter
from minirec.errors import MinirecError
from minirec.flags import config_from_flags
from minirec.io import read_text, write_json, write_text
from minirec.sid.catalogue import load_items, read_json_object

log = logging.getLogger(__name__)

SPLIT_METHODS = ("chronological_global", "leave_one_out")
COLUMNS = {
    "user": ("user_id", "user", "reviewerID", "user_id:token"),
    "item": ("item_id", "item", "parent_asin", "asin", "item_id:token"),
    "timestamp": ("timestamp", "time", "unixReviewTime", "timestamp:float"),
    "rating": ("rating", "overall", "rating:float"),
}


def parse_time(value, where):
    """A number (unix seconds) or an ISO-8601 date/time -> float seconds."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    text = str(value).strip()
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise MinirecError(f"{where}: timestamp {text!r} is neither unix seconds nor an ISO date like 2018-11-30")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def _id(value, what, where):
    text = str(value).strip() if value is not None else ""
    if not text or any(ch.isspace() for ch in text):
        raise MinirecError(f"{where}: {what} id {value!r} is empty or contains whitespace; ids must be single tokens")
    return text


def _pick_columns(names, path):
    found = {}
    for key, aliases in COLUMNS.items():
        found[key] = next((a for a in aliases if a in names), None)
    missing = [k for k in ("user", "item", "timestamp") if found[k] is None]
    if missing:
        wanted = ", ".join(f"{k} ({'/'.join(COLUMNS[k])})" for k in missing)
        raise MinirecError(f"{path}: missing column(s) {wanted}; found {sorted(names)}")
    return found


def read_events(path) -> dict[str, list[tuple[str, float, float | None]]]:
    """CSV or JSONL events -> user -> [(item, time, rating)] sorted by time (stable)."""
    path = Path(path)
    if not path.is_file():
        raise MinirecError(f"{path}: interactions file not found")
    records = []
    if path.suffix == ".csv":
        reader = csv.DictReader(io.StringIO(read_text(path), newline=""))
        cols = _pick_columns(reader.fieldnames or [], path)
        for row in reader:
            check_csv_row(row, reader, path)
            records.append((f"{path}:{reader.line_num}", row))
    elif path.suffix in (".jsonl", ".json"):
        cols = None
        for lineno, line in enumerate(read_text(path).split("\n"), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise MinirecError(f"{path}:{lineno}: not a JSON object per line ({e})")
            if not isinstance(row, dict):
                raise MinirecError(f"{path}:{lineno}: expected a JSON object per line")
            cols = cols or _pick_columns(row.keys(), path)
            records.append((f"{path}:{lineno}", row))
    else:
        raise MinirecError(f"{path}: unknown format {path.suffix!r}; use .csv or .jsonl")
    if not records:
        raise MinirecError(f"{path}: no events")
    users: dict[str, list] = {}
    for where, row in records:
        missing = [k for k in ("user", "item", "timestamp") if row.get(cols[k]) in (None, "")]
        if missing:
            raise MinirecError(f"{where}: empty {', '.join(cols[k] for k in missing)}; every event needs user, item and time")
        rating = None
        if cols["rating"] and row.get(cols["rating"]) not in (None, ""):
            try:
                rating = float(row[cols["rating"]])
            except ValueError:
                raise MinirecError(f"{where}: rating {row[cols['rating']]!r} is not a number")
        user = _id(row[cols["user"]], "user", where)
        users.setdefault(user, []).append((_id(row[cols["item"]], "item", where),
                                           parse_time(row[cols["timestamp"]], where), rating))
    return {u: sorted(evs, key=lambda e: e[1]) for u, evs in users.items()}


def read_sequences(path) -> dict[str, list[tuple[str, float | None, None]]]:
    """``{"user": [item, ...]}`` or ``{"user": [[item, time], ...]}`` -> user -> [(item, time, None)]."""
    path = Path(path)
    data = read_json_object(path, "sequences file", '{"user": [item, ...]} or {"user": [[item, time], ...]}',
                            key="user")
    users = {}
    for user, seq in data.items():
        where = f"{path}: user {user!r}"
        if not isinstance(seq, list):
            raise MinirecError(f"{where}: expected a list of item ids (or [item, timestamp] pairs)")
        events = []
        for pos, entry in enumerate(seq):
            if isinstance(entry, list):
                if len(entry) != 2:
                    raise MinirecError(f"{where}, position {pos}: expected [item, timestamp], got {entry!r}")
                events.append((_id(entry[0], "item", where), parse_time(entry[1], where), None))
            else:
                events.append((_id(entry, "item", where), None, None))
        timed = [e[1] is not None for e in events]
        if any(timed) and not all(timed):
            raise MinirecError(f"{where}: mixes bare items and [item, timestamp] pairs; use one form")
        for pos in range(1, len(events)):
            if timed[0] and events[pos][1] < events[pos - 1][1]:
                raise MinirecError(
                    f"{where}: timestamps go back in time at position {pos} "
                    f"({events[pos - 1][1]:.0f} -> {events[pos][1]:.0f}); a sequence must be chronological"
                )
        users[_id(user, "user", where)] = events
    return users


def kcore_filter(users: dict, k: int) -> dict:
    """Drop users and items with fewer than k interactions, repeatedly, until none remain."""
    while True:
        item_counts = Counter(e[0] for evs in users.values() for e in evs)
        kept = {u: [e for e in evs if item_counts[e[0]] >= k] for u, evs in users.items()}
        kept = {u: evs for u, evs in kept.items() if len(evs) >= k}
        if kept == users:
            return kept
        users = kept


def windows(user: str, items: list[str], max_history: int) -> list[Interaction]:
    return [Interaction(user, tuple(items[max(0, t - max_history):t]), items[t]) for t in range(1, len(items))]


def read_order(root) -> list[tuple[str, str]]:
    """(user, target) of every row of an existing split dir, train then valid then test."""
    root = Path(root)
    order = []
    for split in ("train", "valid", "test"):
        path = root / f"{split}.inter"
        if not path.is_file():
            raise MinirecError(f"{path}: --order_from needs a dir with train/valid/test .inter files")
        for lineno, line in enumerate(read_text(path).splitlines(), 1):
            if not line.strip() or (lineno == 1 and line.startswith("user_id")):
                continue
            cells = line.split("\t")
            if len(cells) != 3:
                raise MinirecError(f"{path}:{lineno}: expected 3 tab-separated columns")
            order.append((cells[0], cells[2]))
    return order


def split_global(users: dict, max_history: int, order=None, ratios=(0.8, 0.1, 0.1)):
    """chronological_global: windows ordered by target time (or by ``order``), cut by ``ratios``."""
    per_user = {u: windows(u, [e[0] for e in evs], max_history) for u, evs in users.items()}
    if order is None:
        if any(e[1] is None for evs in users.values() for e in evs):
            raise MinirecError(
                "--split chronological_global orders rows by time, but the sequences have no timestamps; "
                "pass --order_from DIR (an existing split), sequences of [item, timestamp] pairs, or --split leave_one_out"
            )
        timed = [(evs[t][1], row) for u, evs in users.items() for t, row in enumerate(per_user[u], 1)]
        rows = [row for _, row in sorted(timed, key=lambda pair: pair[0])]  # stable: ties keep input order
    else:
        rows, cursor = [], Counter()
        for n, (user, target) in enumerate(order, 1):
            mine = per_user.get(user, [])
            if cursor[user] >= len(mine):
                raise MinirecError(f"--order_from row {n}: user {user!r} has only {len(mine)} windows here; "
                                   "the order belongs to other data (k-core, time window?)")
            row = mine[cursor[user]]
            if row.target != target:
                raise MinirecError(f"--order_from row {n}: user {user!r}'s window {cursor[user] + 1} targets "
                                   f"{row.target!r} here but {target!r} there; the order belongs to other data")
            rows.append(row)
            cursor[user] += 1
        left = sum(len(w) for w in per_user.values()) - len(rows)
        if left:
            raise MinirecError(f"--order_from covers {len(rows)} rows but the data has {left} more windows")
    n = len(rows)
    cut1, cut2 = int(n * ratios[0]), int(n * (ratios[0] + ratios[1]))
    return {"train": rows[:cut1], "valid": rows[cut1:cut2], "test": rows[cut2:]}


def split_leave_one_out(users: dict, max_history: int):
    out = {"train": [], "valid": [], "test": []}
    for user, evs in users.items():
        rows = windows(user, [e[0] for e in evs], max_history)
        out["test"] += rows[-1:]
        out["valid"] += rows[-2:-1]
        out["train"] += rows[:-2]
    return out


@dataclass
class PrepareConfig:
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
        if any((Path(self.out) / f"{s}.{x}").exists() for s in ("train", "valid", "test") for x in ("inter", "csv")):
            raise MinirecError(f"--out {self.out} already holds a dataset; pass a new dir (nothing was changed)")


def prepare(**options) -> dict:
    """:func:`main` for Python callers: keyword arguments are the flags of :class:`PrepareConfig`."""
    return main(config_from_flags(PrepareConfig, options, "-m minirec.data.prepare"))


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

    users = read_events(interactions) if interactions is not None else read_sequences(sequences)
    source = str(interactions if interactions is not None else sequences)
    unknown = sorted({e[0] for evs in users.values() for e in evs} - set(catalogue))
    if unknown:
        raise MinirecError(f"{source}: {len(unknown)} item id(s) not in {items_path}, e.g. {unknown[:5]}; "
                           "add their metadata or drop those interactions")
    if start is not None or end is not None:
        if any(e[1] is None for evs in users.values() for e in evs):
            raise MinirecError("--start/--end need timestamps; the sequences have none")
        lo = parse_time(start, "--start") if start is not None else float("-inf")
        hi = parse_time(end, "--end") if end is not None else float("inf")
        users = {u: [e for e in evs if lo <= e[1] < hi] for u, evs in users.items()}
    if min_rating is not None:
        users = {u: [e for e in evs if e[2] is None or e[2] >= float(min_rating)] for u, evs in users.items()}
    if kcore:
        users = kcore_filter(users, kcore)
    users = {u: evs for u, evs in users.items() if len(evs) >= 2}
    if not users:
        raise MinirecError(f"{source}: no user has 2 or more interactions after filtering; loosen --kcore/--start/--end")

    if split == "leave_one_out":
        splits = split_leave_one_out(users, max_history)
    else:
        splits = split_global(users, max_history, read_order(order_from) if order_from is not None else None)
    if not all(splits.values()):
        raise MinirecError(f"{source}: too few windows for non-empty train/valid/test ({ {k: len(v) for k, v in splits.items()} })")

    out.mkdir(parents=True, exist_ok=True)
    for name, rows in splits.items():
        write_inter(out / f"{name}.inter", rows)
    used = {e[0] for evs in users.values() for e in evs}
    if used == set(catalogue):
        if items_path.resolve() != (out / "item.json").resolve():
            shutil.copyfile(items_path, out / "item.json")
    else:
        write_text(out / "item.json", json.dumps({i: m for i, m in catalogue.items() if i in used}, ensure_ascii=False, indent=2))
    summary = {
        "source": source, "items_file": str(items_path), "split": split, "max_history": max_history,
        "kcore": kcore, "start": start, "end": end, "min_rating": min_rating,
        "order_from": str(order_from) if order_from is not None else None,
        "users": len(users), "items": len(used), "interactions": sum(len(e) for e in users.values()),
        "rows": {k: len(v) for k, v in splits.items()},
    }
    write_json(out / "prepare.json", summary)
    print(f"{out}: {summary['users']} users, {summary['items']} items, rows {summary['rows']}")
    print(f"next: python -m minirec.sid build --items {out / 'item.json'} --out {out / 'index.json'}")
    return summary


command = Command("-m minirec.data.prepare", PrepareConfig, main)

if __name__ == "__main__":
    run_cli(command)
