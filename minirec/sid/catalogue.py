"""The catalogue: every item's id, semantic ID (SID) and title, loaded once from
``index.json`` (+ ``item.json``) and shared by SFT, RL and evaluation.

A SID is a tuple of tokens such as ``("<a_12>", "<b_200>", "<c_7>")``; its string form is
the tokens concatenated. SIDs may have any depth, mixed within one catalogue. Several items
may share one SID (a *collision group*): matching is always by SID string.
"""

import hashlib
import html
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from minirec.errors import MinirecError
from minirec.io import read_text

SID_TOKEN = re.compile(r"<[A-Za-z][A-Za-z0-9]*_\d+>")


def clean_text(text: str) -> str:
    """Undo the HTML-entity residue of Amazon titles (``&amp;quot;`` needs two passes)."""
    for _ in range(3):
        unescaped = html.unescape(text)
        if unescaped == text:
            break
        text = unescaped
    return " ".join(text.split())


def sid_string(tokens) -> str:
    return "".join(tokens)


def split_sid(sid: str) -> tuple[str, ...]:
    """``"<a_1><b_2>"`` -> ``("<a_1>", "<b_2>")``; raises ValueError if it is not a SID."""
    tokens = SID_TOKEN.findall(sid)
    if not tokens or "".join(tokens) != sid:
        raise ValueError(f"not a SID string: {sid!r}")
    return tuple(tokens)


def read_json_object(path, what: str, shape: str, hint: str = "", key: str = "item id") -> dict:
    """A non-empty JSON object from ``path``, or a one-line MinirecError (missing file, invalid
    JSON, a ``key`` given twice, not an object). ``shape`` describes the expected content."""
    path = Path(path)
    if not path.is_file():
        raise MinirecError(f"{path}: {what} not found{'; ' + hint if hint else ''}")

    def reject_duplicates(pairs):
        seen = set()
        for name, _ in pairs:
            if name in seen:
                raise MinirecError(f"{path}: {key} {name!r} appears twice; keep one entry per {key}")
            seen.add(name)
        return dict(pairs)

    try:
        data = json.loads(read_text(path), object_pairs_hook=reject_duplicates)
    except json.JSONDecodeError as e:
        raise MinirecError(f"{path}: not valid JSON ({e}); expected {shape}")
    if not isinstance(data, dict) or not data:
        raise MinirecError(f"{path}: expected a non-empty JSON object: {shape}")
    return data


def load_items(path) -> dict:
    """``item.json``: item id -> {"title", "description", ...}, ids usable in .inter files."""
    items = read_json_object(path, "item file", '{"item_id": {"title": ..., "description": ...}}',
                             "pass --items pointing at an item.json")
    for item_id, meta in items.items():
        if not item_id.strip() or any(ch.isspace() for ch in item_id):
            raise MinirecError(f"{path}: item id {item_id!r} is empty or contains whitespace; .inter files cannot hold it")
        if not isinstance(meta, dict) or not isinstance(meta.get("title", ""), str):
            raise MinirecError(f"{path}: item {item_id!r} must be an object with a string \"title\"")
    return items


@dataclass
class Catalogue:
    """Item id -> SID tokens (and title); SID string -> item ids."""

    sids: dict[str, tuple[str, ...]]
    titles: dict[str, str] = field(default_factory=dict)
    index_sha256: str = ""

    def __post_init__(self):
        self.items_by_sid: dict[str, list[str]] = {}
        for item, tokens in self.sids.items():
            self.items_by_sid.setdefault(sid_string(tokens), []).append(item)

    def __len__(self) -> int:
        return len(self.sids)

    def __contains__(self, item_id) -> bool:
        return item_id in self.sids

    def sid(self, item_id: str) -> str:
        return sid_string(self.sids[item_id])

    def title(self, item_id: str) -> str:
        return self.titles[item_id]

    @property
    def has_titles(self) -> bool:
        return bool(self.titles) and all(self.titles.get(i) for i in self.sids)

    def sid_tokens(self) -> list[str]:
        """Every distinct SID token, ordered by level prefix then code (stable across runs)."""
        tokens = {t for sid in self.sids.values() for t in sid}

        def key(tok):
            prefix, code = tok[1:-1].rsplit("_", 1)
            return prefix, int(code)

        return sorted(tokens, key=key)

    def distinct_sids(self) -> list[str]:
        return list(self.items_by_sid)


def load_catalogue(index_path, item_path=None) -> Catalogue:
    """Read and validate ``index.json`` (``{"id": ["<a_1>", ...]}``) and optional ``item.json``."""
    index_path = Path(index_path)
    index = read_json_object(index_path, "SID index", '{"item_id": ["<a_1>", ...]}',
                             "pass a dataset dir that holds index.json")
    sids = {}
    for item, tokens in index.items():
        if not isinstance(tokens, list) or not tokens or not all(
            isinstance(t, str) and SID_TOKEN.fullmatch(t) for t in tokens
        ):
            raise MinirecError(
                f"{index_path}: item {item!r} has SID {tokens!r}; expected a list of tokens like \"<a_12>\""
            )
        sids[str(item)] = tuple(tokens)

    titles = {}
    if item_path is not None and Path(item_path).is_file():
        titles = {item: clean_text(meta.get("title", "")) for item, meta in load_items(item_path).items() if item in sids}
    return Catalogue(sids=sids, titles=titles, index_sha256=hashlib.sha256(index_path.read_bytes()).hexdigest())
