"""Raw interactions -> an :class:`Events` table (pandas), validated with one-line errors.

Events come from a CSV / JSONL of events (user, item, timestamp[, rating]) or from per-user
sequences (``{"user": [item, ...]}`` or ``{"user": [[item, timestamp], ...]}``).

Vectorised: pandas' C parser reads the CSV columns that are used (numeric timestamps as
floats); ids are checked once per distinct value, ISO dates parsed once per distinct string;
rows are grouped by user with one stable sort. When a check fails, the first bad record (in
file order) is read again and checked by :func:`check_event`, the per-row rules, so each
message names the file and line exactly as a row-by-row reader would. Irregular sequence
files (bare items mixed with pairs, ids that are not strings, ...) take the row-by-row path.
"""

import csv
import json
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from itertools import chain
from pathlib import Path

import numpy as np
import pandas as pd

from minirec.errors import MinirecError
from minirec.io import utf8_error
from minirec.sid.catalogue import read_json_object

COLUMNS = {
    "user": ("user_id", "user", "reviewerID", "user_id:token"),
    "item": ("item_id", "item", "parent_asin", "asin", "item_id:token"),
    "timestamp": ("timestamp", "time", "unixReviewTime", "timestamp:float"),
    "rating": ("rating", "overall", "rating:float"),
}


@dataclass
class Events:
    """One row per event: ``user``, ``item`` (categoricals whose categories are the ids, users in
    order of first appearance), ``time`` and ``rating`` (floats; NaN = none). Rows are grouped
    by user and chronological within a user (ties keep input order)."""

    frame: pd.DataFrame

    @property
    def timed(self) -> bool:
        return not self.frame["time"].isna().any()


def parse_time(value, where):
    """A number (unix seconds) or an ISO-8601 date/time -> float seconds."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        text = str(value).strip()
        try:
            seconds = float(text)
        except ValueError:
            try:
                moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
            except ValueError:
                raise MinirecError(f"{where}: timestamp {text!r} is neither unix seconds nor an ISO date like 2018-11-30")
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=timezone.utc)
            seconds = moment.timestamp()
    if seconds != seconds:
        raise MinirecError(f"{where}: timestamp {value!r} is NaN; every event needs a time")
    return seconds


def _id(value, what, where):
    text = str(value).strip() if value is not None else ""
    if not text or any(ch.isspace() for ch in text):
        raise MinirecError(f"{where}: {what} id {value!r} is empty or contains whitespace; ids must be single tokens")
    return text


def _pick_columns(names, path):
    found = {key: next((a for a in aliases if a in names), None) for key, aliases in COLUMNS.items()}
    missing = [k for k in ("user", "item", "timestamp") if found[k] is None]
    if missing:
        wanted = ", ".join(f"{k} ({'/'.join(COLUMNS[k])})" for k in missing)
        raise MinirecError(f"{path}: missing column(s) {wanted}; found {sorted(names)}")
    return found


def check_event(where, row, cols):
    """The per-row rules (a raw CSV/JSONL record): raises the one-line error for a bad row."""
    missing = [k for k in ("user", "item", "timestamp") if row.get(cols[k]) in (None, "")]
    if missing:
        raise MinirecError(f"{where}: empty {', '.join(cols[k] for k in missing)}; every event needs user, item and time")
    if cols["rating"] and row.get(cols["rating"]) not in (None, ""):
        try:
            float(row[cols["rating"]])
        except (TypeError, ValueError):
            raise MinirecError(f"{where}: rating {row[cols['rating']]!r} is not a number")
    _id(row[cols["user"]], "user", where)
    _id(row[cols["item"]], "item", where)
    parse_time(row[cols["timestamp"]], where)


def _blank(row):
    """A line of spaces: csv gives it as one field, pandas skips it like an empty line."""
    values = list(row.values())
    return not values[0].strip() and all(v is None for v in values[1:])


def _raise_at(path, cols, index):
    """Re-read record ``index`` (0-based, as pandas counts them) and raise its error."""
    with _utf8(path), open(path, encoding="utf-8", newline="") as f:
        if path.suffix == ".csv":
            reader = csv.DictReader(f)
            records = ((f"{path}:{reader.line_num}", row) for row in reader if not _blank(row))
        else:
            records = ((f"{path}:{n}", json.loads(line)) for n, line in enumerate(f, 1) if line.strip())
        for k, (where, row) in enumerate(records):
            if k == index:
                check_event(where, row, cols)
                raise MinirecError(f"{where}: invalid event {row!r}")
    raise MinirecError(f"{path}: invalid event at record {index + 1}")


def _ids(values):
    """Raw ids -> (codes in first-appearance order, ids, bad rows); None/"" or inner whitespace is bad."""
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    parts = [v.split() for v in uniques.tolist()]  # ids arrive as str (or None: missing)
    ok = np.fromiter((len(p) == 1 for p in parts), bool, len(parts))
    merged, names = pd.factorize(np.array([p[0] if len(p) == 1 else "" for p in parts], dtype=object))
    merged = np.append(merged, 0)  # code -1 (missing) looks up the last entry
    ok = np.append(ok, False)
    return merged[codes], names, ~ok[codes]


def _parse_unique(values, parse):
    """Apply ``parse`` once per distinct value -> (floats, bad rows); a MinirecError/ValueError marks bad."""
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    out = np.empty(len(uniques) + 1)
    bad = np.zeros(len(uniques) + 1, bool)
    for n, value in enumerate(uniques.tolist()):
        try:
            out[n] = parse(value)
        except (MinirecError, TypeError, ValueError):
            out[n], bad[n] = np.nan, True
    out[-1], bad[-1] = np.nan, True  # missing
    return out[codes], bad[codes]


def _ratings(values):
    """Raw ratings -> (floats, NaN where none, bad rows); ``None`` without a rating column."""
    if values is None or values.dtype == np.float64:  # no column, or parsed by the C parser ("" -> NaN)
        return (None if values is None else values.to_numpy()), None
    if values.dtype == object:
        missing = np.array([v is None or v == "" for v in values], dtype=bool)
    else:
        missing = (values == "").to_numpy(dtype=bool)
    rating, bad = _parse_unique(values, float)
    rating[missing] = np.nan
    return rating, bad & ~missing


def _by_user_then_time(user, time):
    """The stable order by (user, time): one integer sort key where times are whole numbers."""
    if len(time) and np.isfinite(time).all() and (time == np.round(time)).all():
        lo, span = time.min(), time.max() - time.min() + 1
        if span * (user.max() + 1) < 2.0 ** 62:
            return np.argsort(user.astype(np.int64) * np.int64(span) + (time - lo).astype(np.int64), kind="stable")
    return np.lexsort((time, user))


def _frame(user, item, time, rating) -> Events:
    """Arrays of validated events -> Events (rows grouped by user, stable by time)."""
    user_codes, user_names = user
    item_codes, item_names = item
    order = _by_user_then_time(user_codes, time)
    frame = pd.DataFrame({
        "user": pd.Categorical.from_codes(user_codes[order], categories=pd.Index(user_names, dtype=object)),
        "item": pd.Categorical.from_codes(item_codes[order], categories=pd.Index(item_names, dtype=object)),
        "time": time[order],
        "rating": np.full(len(order), np.nan) if rating is None else rating[order],
    })
    return Events(frame.reset_index(drop=True))


@contextmanager
def _utf8(path):
    """Bytes that are not UTF-8, met while reading ``path`` any way: the one-line error with file:line."""
    try:
        yield
    except UnicodeDecodeError:
        raise utf8_error(path) from None


def _read_header(path) -> list[str]:
    """The header, after one streaming pass that checks every record has as many fields as it:
    pandas with ``usecols`` would drop the extra fields of a record silently (measured: ~0.5 s
    per million rows, against ~1.2 s for pandas' own read)."""
    with _utf8(path), open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        header = next(reader, [])
        for row in reader:
            if len(row) != len(header) and (len(row) > 1 or row and row[0].strip()):  # not a blank line
                raise MinirecError(f"{path}:{reader.line_num}: {len(row)} fields but the header has {len(header)}; "
                                   "quote cells that contain commas")
    return header


def _read_csv(path):
    header = _read_header(path)
    cols = _pick_columns(header, path)
    names = {key: name for key, name in cols.items() if name}
    read = dict(usecols=list(names.values()), keep_default_na=False, encoding="utf-8")
    numbers = {name: "float64" for key, name in names.items() if key in ("timestamp", "rating")}
    try:
        with _utf8(path):
            try:  # numeric timestamps and ratings, parsed by the C parser (correctly rounded, as float() is)
                frame = pd.read_csv(path, dtype={**{n: str for n in names.values()}, **numbers},
                                    na_values={names["rating"]: [""]} if "rating" in names else None, **read)
            except ValueError as e:  # some are not plain numbers (ISO dates, empty cells): parse as text
                if isinstance(e, (pd.errors.ParserError, UnicodeDecodeError)):
                    raise
                frame = pd.read_csv(path, dtype=str, na_filter=False, **read)
    except pd.errors.ParserError as e:
        raise MinirecError(f"{path}: not a readable CSV ({' '.join(str(e).split())})")
    return cols, {key: frame[name] for key, name in names.items()}


def _read_jsonl(path):
    cols, columns = None, None
    with _utf8(path), open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise MinirecError(f"{path}:{lineno}: not a JSON object per line ({e})")
            if not isinstance(row, dict):
                raise MinirecError(f"{path}:{lineno}: expected a JSON object per line")
            if cols is None:
                cols = _pick_columns(row.keys(), path)
                columns = {key: [] for key, name in cols.items() if name}
            for key, values in columns.items():
                values.append(row.get(cols[key]))
    if cols is None:
        return None, {}
    out = {key: _as_read(columns[key], ()) for key in ("user", "item")}  # ids as the row rules see them: str()
    out["timestamp"] = _as_read(columns["timestamp"], (int, float))
    if "rating" in columns:
        out["rating"] = _as_read(columns["rating"], (int, float, bool))
    return cols, out


def _as_read(values, numbers):
    """JSON values -> an object array: None stays, ``numbers`` types stay, anything else becomes str."""
    return np.array([v if v is None or type(v) is str or type(v) in numbers else str(v) for v in values], dtype=object)


def read_events(path) -> Events:
    """CSV or JSONL events -> Events; grouped by user, sorted by time (stable)."""
    path = Path(path)
    if not path.is_file():
        raise MinirecError(f"{path}: interactions file not found")
    if path.suffix == ".csv":
        cols, raw = _read_csv(path)
    elif path.suffix in (".jsonl", ".json"):
        cols, raw = _read_jsonl(path)
    else:
        raise MinirecError(f"{path}: unknown format {path.suffix!r}; use .csv or .jsonl")
    if not raw or not len(raw["user"]):
        raise MinirecError(f"{path}: no events")
    user_codes, user_names, bad = _ids(raw.pop("user"))  # pop: each raw column is freed once coded
    item_codes, item_names, bad_item = _ids(raw.pop("item"))
    stamps = raw.pop("timestamp")
    if stamps.dtype == np.float64:
        time, bad_time = stamps.to_numpy(), np.isnan(stamps.to_numpy())
    else:
        time, bad_time = _parse_unique(stamps, lambda v: parse_time(v, ""))  # "" and None are bad too
    del stamps
    rating, bad_rating = _ratings(raw.pop("rating", None))
    bad |= bad_item | bad_time | (False if bad_rating is None else bad_rating)
    if bad.any():
        _raise_at(path, cols, int(np.argmax(bad)))
    return _frame((user_codes, user_names), (item_codes, item_names), np.asarray(time, float), rating)


def _sequences_rowwise(path, data) -> Events:
    """The per-user rules: raise the first user's error, or build Events from an irregular file."""
    sequences = {}
    for user, seq in data.items():
        where = f"{path}: user {user!r}"
        if not isinstance(seq, list):
            raise MinirecError(f"{where}: expected a list of item ids (or [item, timestamp] pairs)")
        events = []
        for pos, entry in enumerate(seq):
            if isinstance(entry, list):
                if len(entry) != 2:
                    raise MinirecError(f"{where}, position {pos}: expected [item, timestamp], got {entry!r}")
                events.append((_id(entry[0], "item", where), parse_time(entry[1], where)))
            else:
                events.append((_id(entry, "item", where), None))
        timed = [e[1] is not None for e in events]
        if any(timed) and not all(timed):
            raise MinirecError(f"{where}: mixes bare items and [item, timestamp] pairs; use one form")
        for pos in range(1, len(events)):
            if timed[0] and events[pos][1] < events[pos - 1][1]:
                raise MinirecError(
                    f"{where}: timestamps go back in time at position {pos} "
                    f"({events[pos - 1][1]:.0f} -> {events[pos][1]:.0f}); a sequence must be chronological"
                )
        sequences[_id(user, "user", where)] = events  # " u" after "u": one user, the later sequence wins
    users = list(sequences)
    items = [[e[0] for e in events] for events in sequences.values()]
    times = [[e[1] for e in events] for events in sequences.values()]
    lengths = [len(seq) for seq in items]
    item_codes, item_names = pd.factorize(np.array(list(chain.from_iterable(items)), dtype=object))
    time = np.array([np.nan if t is None else t for t in chain.from_iterable(times)], dtype=float)
    return _frame((np.repeat(np.arange(len(users)), lengths), users), (item_codes, item_names), time, None)


def read_sequences(path) -> Events:
    """``{"user": [item, ...]}`` or ``{"user": [[item, time], ...]}`` -> Events (order as given)."""
    path = Path(path)
    data = read_json_object(path, "sequences file", '{"user": [item, ...]} or {"user": [[item, time], ...]}',
                            key="user")
    seqs = list(data.values())
    if not all(type(seq) is list for seq in seqs):
        return _sequences_rowwise(path, data)
    flat = list(chain.from_iterable(seqs))
    if all(type(e) is str for e in flat):
        items, time = np.array(flat, dtype=object), np.full(len(flat), np.nan)
        bad_time = np.zeros(len(flat), bool)
    elif all(type(e) is list and len(e) == 2 and type(e[0]) is str for e in flat):
        items = np.array([e[0] for e in flat], dtype=object)
        stamps = np.array([e[1] if type(e[1]) in (int, float) else str(e[1]) for e in flat], dtype=object)
        time, bad_time = _parse_unique(stamps, lambda v: parse_time(v, ""))
    else:
        return _sequences_rowwise(path, data)
    lengths = np.fromiter(map(len, seqs), np.int64, len(seqs))
    user_codes = np.repeat(np.arange(len(seqs)), lengths)
    item_codes, item_names, bad = _ids(items)
    back = np.zeros(len(flat), bool)
    back[1:] = (time[1:] < time[:-1]) & (user_codes[1:] == user_codes[:-1])
    users = [u.strip() for u in data]
    if (bad | bad_time | back).any() or len(set(users)) != len(users) or any(len(u.split()) != 1 for u in users):
        return _sequences_rowwise(path, data)
    return _frame((user_codes, users), (item_codes, item_names), time, None)
