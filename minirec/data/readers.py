"""Readers for the two on-disk forms of a split, both validated against the catalogue.

* MiniOneRec CSV: ``user_id, history_item_title, item_title, history_item_id, item_id,
  history_item_sid, item_sid``; list cells are Python literals, parsed with
  ``ast.literal_eval`` (never ``eval``).
* Compact ``.inter``: ``user \\t space-separated history ids \\t target id``, with an
  optional RecBole header line.

Both produce the same in-memory rows: :class:`Interaction`. Every error names the file and
the 1-based line, and says how to fix it.
"""

import ast
import csv
import io
import logging
from dataclasses import dataclass
from pathlib import Path

from minirec.errors import MinirecError
from minirec.io import read_text
from minirec.sid.catalogue import Catalogue, load_catalogue

log = logging.getLogger(__name__)

CSV_COLUMNS = (
    "user_id", "history_item_title", "item_title", "history_item_id",
    "item_id", "history_item_sid", "item_sid",
)
SPLITS = ("train", "valid", "test")


@dataclass(frozen=True)
class Interaction:
    """One training/eval row: a user's history (oldest first) and the item that came next."""

    user: str
    history: tuple[str, ...]
    target: str


@dataclass
class RecDataset:
    """A catalogue plus its splits; what every stage reads."""

    root: Path
    catalogue: Catalogue
    splits: dict[str, list[Interaction]]

    def split(self, name: str) -> list[Interaction]:
        if name not in self.splits:
            raise MinirecError(f"{self.root}: no {name!r} split; found {sorted(self.splits)}")
        return self.splits[name]


def _check_item(item, catalogue, where):
    if item not in catalogue:
        raise MinirecError(f"{where}: item id {item!r} is not in index.json; rebuild the index or drop the row")


def read_inter(path, catalogue: Catalogue) -> list[Interaction]:
    path = Path(path)
    rows = []
    for lineno, line in enumerate(read_text(path).split("\n"), 1):
        line = line.rstrip("\r")
        if not line.strip() or (lineno == 1 and line.startswith("user_id")):
            continue
        where = f"{path}:{lineno}"
        cells = line.split("\t")
        if len(cells) != 3:
            raise MinirecError(f"{where}: expected 3 tab-separated columns (user, history ids, target id), "
                               f"got {len(cells)}")
        user, hist, target = cells
        history = tuple(hist.split())
        if not history:
            raise MinirecError(f"{where}: empty history; every row needs at least one past item")
        for item in (*history, target):
            _check_item(item, catalogue, where)
        rows.append(Interaction(user, history, target))
    return rows


def _literal_list(cell, column, where):
    try:
        value = ast.literal_eval(cell)
    except (ValueError, SyntaxError):
        raise MinirecError(f"{where}: column {column!r} is not a Python list literal: {cell[:60]!r}")
    if not isinstance(value, list):
        raise MinirecError(f"{where}: column {column!r} must be a list literal like \"['a', 'b']\", got {type(value).__name__}")
    return value


def check_csv_row(record: dict, reader: csv.DictReader, path) -> None:
    """A ``DictReader`` row must have exactly the header's fields (extras land under ``None``)."""
    extra, short = record.get(None), None in record.values()
    if extra or short:
        n = len(reader.fieldnames) + len(extra or []) - sum(v is None for v in record.values())
        raise MinirecError(f"{path}:{reader.line_num}: {n} fields but the header has {len(reader.fieldnames)}; "
                           "quote cells that contain commas")


def read_csv(path, catalogue: Catalogue) -> list[Interaction]:
    path = Path(path)
    rows = []
    reader = csv.DictReader(io.StringIO(read_text(path), newline=""))
    missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise MinirecError(f"{path}: missing column(s) {missing}; a MiniOneRec CSV has {list(CSV_COLUMNS)}")
    for record in reader:
        check_csv_row(record, reader, path)
        where = f"{path}:{reader.line_num}"
        hist_ids = [str(i) for i in _literal_list(record["history_item_id"], "history_item_id", where)]
        hist_sids = _literal_list(record["history_item_sid"], "history_item_sid", where)
        if not hist_ids:
            raise MinirecError(f"{where}: empty history; every row needs at least one past item")
        if len(hist_ids) != len(hist_sids):
            raise MinirecError(
                f"{where}: history has {len(hist_ids)} item ids but {len(hist_sids)} SIDs; the two lists must align"
            )
        target = str(record["item_id"]).strip()
        for item, sid in zip((*hist_ids, target), (*hist_sids, record["item_sid"])):
            _check_item(item, catalogue, where)
            if catalogue.sid(item) != sid:
                raise MinirecError(
                    f"{where}: item {item!r} has SID {sid!r} here but {catalogue.sid(item)!r} in index.json; "
                    "the CSV was built with another index"
                )
        rows.append(Interaction(record["user_id"], tuple(hist_ids), target))
    return rows


def _split_file(root: Path, split: str):
    names = [f"{split}.inter", f"{split}.csv"] + (["train_partial.inter", "train_partial.csv"] if split == "train" else [])
    for name in names:
        if (root / name).is_file():
            if name.startswith("train_partial"):
                log.warning("%s: using %s, a partial train split", root, name)
            return root / name
    return None


def check_dataset_dir(root) -> Path:
    """Cheap enough for flag validation: the dir exists (its files are checked when loaded)."""
    root = Path(root)
    if not root.is_dir():
        raise MinirecError(f"{root}: dataset directory not found; pass --data_dir pointing at e.g. data/Industrial_and_Scientific")
    return root


def load_dataset(root, splits=SPLITS) -> RecDataset:
    """Load ``index.json``, ``item.json`` (optional) and the requested splits from a dataset dir."""
    root = check_dataset_dir(root)
    catalogue = load_catalogue(root / "index.json", root / "item.json")
    loaded = {}
    for split in splits:
        path = _split_file(root, split)
        if path is None:
            raise MinirecError(f"{root}: no {split}.inter or {split}.csv; each dataset dir needs train/valid/test files")
        rows = (read_inter if path.suffix == ".inter" else read_csv)(path, catalogue)
        if not rows:
            raise MinirecError(f"{path}: the {split} split is empty; it needs at least one row")
        loaded[split] = rows
    return RecDataset(root=root, catalogue=catalogue, splits=loaded)


def write_inter(path, rows) -> None:
    """Write rows in the compact form (atomically), with the RecBole header line."""
    from minirec.io import write_text

    lines = ["user_id:token\titem_id_list:token_seq\titem_id:token"]
    lines += [f"{r.user}\t{' '.join(r.history)}\t{r.target}" for r in rows]
    write_text(path, "\n".join(lines) + "\n")
