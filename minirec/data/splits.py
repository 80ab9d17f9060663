"""Events -> k-core -> sliding windows -> train/valid/test rows -> ``.inter`` files, vectorised.

A window is identified by the row of its target event: for a user's event at position t >= 1,
the history is the up-to ``max_history`` events before it. Splits are arrays of target rows,
in output order; :func:`write_splits` formats them with numpy (no per-row Python loop).
"""

from pathlib import Path

import numpy as np
import pandas as pd

from minirec.errors import MinirecError
from minirec.io import atomic_path, read_text

HEADER = b"user_id:token\titem_id_list:token_seq\titem_id:token\n"


def kcore_filter(frame: pd.DataFrame, k: int) -> pd.DataFrame:
    """Drop users and items with fewer than k interactions, repeatedly, until none remain."""
    user, item = frame["user"].cat.codes.to_numpy(), frame["item"].cat.codes.to_numpy()
    n_users, n_items = len(frame["user"].cat.categories), len(frame["item"].cat.categories)
    keep = np.ones(len(frame), bool)
    while True:
        kept = keep & (np.bincount(item[keep], minlength=n_items)[item] >= k)
        kept &= np.bincount(user[kept], minlength=n_users)[user] >= k
        if (kept == keep).all():
            return frame[keep]
        keep = kept


def positions(frame: pd.DataFrame) -> np.ndarray:
    """Each row's 0-based position in its user's sequence (rows are grouped by user)."""
    user = frame["user"].cat.codes.to_numpy()
    rows = np.arange(len(user))
    starts = np.ones(len(user), bool)
    starts[1:] = user[1:] != user[:-1]
    return rows - np.maximum.accumulate(np.where(starts, rows, 0))


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


def _replay(frame, targets, order):
    """Target rows in the order of ``order``'s (user, target) rows: per user, its windows in turn."""
    users = frame["user"].cat.categories
    user = frame["user"].cat.codes.to_numpy()[targets]
    count = np.bincount(user, minlength=len(users))
    first = np.cumsum(count) - count
    names = np.array([u for u, _ in order], dtype=object)
    wanted = np.array([t for _, t in order], dtype=object)
    code = users.get_indexer(names)
    cursor = pd.Series(names).groupby(names, sort=False).cumcount().to_numpy()
    have = np.where(code >= 0, count[code], 0)
    short = cursor >= have
    window = np.where(short, 0, first[code] + cursor)
    got = frame["item"].cat.categories.to_numpy()[frame["item"].cat.codes.to_numpy()[targets[window]]]
    wrong = ~short & (got != wanted)
    if (short | wrong).any():
        n = int(np.argmax(short | wrong))
        if short[n]:
            raise MinirecError(f"--order_from row {n + 1}: user {names[n]!r} has only {have[n]} windows here; "
                               "the order belongs to other data (k-core, time window?)")
        raise MinirecError(f"--order_from row {n + 1}: user {names[n]!r}'s window {cursor[n] + 1} targets "
                           f"{got[n]!r} here but {wanted[n]!r} there; the order belongs to other data")
    if len(targets) > len(order):
        raise MinirecError(f"--order_from covers {len(order)} rows but the data has {len(targets) - len(order)} more windows")
    return targets[window]


def split_global(frame, timed: bool, order=None, ratios=(0.8, 0.1, 0.1)) -> dict[str, np.ndarray]:
    """chronological_global: windows ordered by target time (or by ``order``), cut by ``ratios``."""
    targets = np.flatnonzero(positions(frame) >= 1)
    if order is None:
        if not timed:
            raise MinirecError(
                "--split chronological_global orders rows by time, but the sequences have no timestamps; "
                "pass --order_from DIR (an existing split), sequences of [item, timestamp] pairs, or --split leave_one_out"
            )
        rows = targets[np.argsort(frame["time"].to_numpy()[targets], kind="stable")]  # ties keep input order
    else:
        rows = _replay(frame, targets, order)
    n = len(rows)
    cut1, cut2 = int(n * ratios[0]), int(n * (ratios[0] + ratios[1]))
    return {"train": rows[:cut1], "valid": rows[cut1:cut2], "test": rows[cut2:]}


def split_leave_one_out(frame) -> dict[str, np.ndarray]:
    """Per user, the last window is test, the one before valid, the rest train (users in order)."""
    pos = positions(frame)
    targets = np.flatnonzero(pos >= 1)
    last = np.ones(len(pos), bool)  # the last row of its user
    last[:-1] = pos[1:] == 0
    user_end = np.minimum.accumulate(np.where(last, np.arange(len(pos)), len(pos))[::-1])[::-1]
    from_end = user_end[targets] - targets
    return {"train": targets[from_end >= 2], "valid": targets[from_end == 1], "test": targets[from_end == 0]}


def write_splits(out: Path, frame, splits: dict[str, np.ndarray], max_history: int, chunk: int = 16_384) -> None:
    """Write ``out/{name}.inter`` for each split: its windows' ``user \t history \t target`` lines.

    Every event's item is laid out once, followed by a space, in one byte buffer: a window's
    history and target are then one slice of it, copied after the user's ``"user\t"`` by one
    numpy gather per chunk of windows; the space before the target becomes a tab, the one after
    it a newline. Files are written atomically.
    """
    user, item = frame["user"].cat.codes.to_numpy(), frame["item"].cat.codes.to_numpy()
    pos = positions(frame)
    user_bytes = [f"{u}\t".encode() for u in frame["user"].cat.categories]
    item_bytes = np.array([f"{i} ".encode() for i in frame["item"].cat.categories], dtype=object)
    user_len = np.fromiter(map(len, user_bytes), np.int64, len(user_bytes))
    user_at = np.cumsum(user_len) - user_len
    offset = np.zeros(len(item) + 1, np.int64)  # event e's item starts at offset[e] of the events' part
    np.cumsum(np.fromiter(map(len, item_bytes), np.int64, len(item_bytes))[item], out=offset[1:])
    base = int(user_len.sum())
    source = np.empty(base + int(offset[-1]), np.uint8)
    source[:base] = np.frombuffer(b"".join(user_bytes), np.uint8)
    source[base:] = np.frombuffer(b"".join(item_bytes[item]), np.uint8)
    for name, rows in splits.items():
        with atomic_path(out / f"{name}.inter") as tmp, open(tmp, "wb") as f:
            f.write(HEADER)
            for lo in range(0, len(rows), chunk):
                target = rows[lo:lo + chunk]
                start = target - np.minimum(pos[target], max_history)
                lens = np.column_stack([user_len[user[target]], offset[target + 1] - offset[start]]).ravel()
                begins = np.column_stack([user_at[user[target]], base + offset[start]]).ravel()
                ends = np.cumsum(lens)
                line = source[np.repeat(begins - (ends - lens), lens) + np.arange(ends[-1])]
                line_end = ends[1::2]
                line[line_end - 1] = ord("\n")
                line[line_end - 1 - (offset[target + 1] - offset[target])] = ord("\t")
                f.write(line.tobytes())
