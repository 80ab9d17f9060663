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


def _reject_duplicate_keys(where):
    def hook(pairs):
        seen = set()
        for key, _ in pairs:
            if key in seen:
                raise MinirecError(f"{where}: item id {key!r} appears twice; keep one entry per item")
            seen.add(key)
        return dict(pairs)

    return hook


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
    if not index_path.is_file():
        raise MinirecError(f"{index_path}: SID index not found; pass a dataset dir that holds index.json")
    raw = index_path.read_bytes()
    try:
        index = json.loads(raw, object_pairs_hook=_reject_duplicate_keys(index_path))
    except json.JSONDecodeError as e:
        raise MinirecError(f"{index_path}: not valid JSON ({e}); expected {{\"item_id\": [\"<a_1>\", ...]}}")
    if not isinstance(index, dict) or not index:
        raise MinirecError(f"{index_path}: expected a non-empty JSON object of item id -> list of SID tokens")
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
        try:
            items = json.loads(Path(item_path).read_bytes(), object_pairs_hook=_reject_duplicate_keys(item_path))
        except json.JSONDecodeError as e:
            raise MinirecError(f"{item_path}: not valid JSON ({e}); expected {{\"item_id\": {{\"title\": ...}}}}")
        for item, meta in items.items():
            if not isinstance(meta, dict) or not isinstance(meta.get("title", ""), str):
                raise MinirecError(f"{item_path}: item {item!r} must be an object with a string \"title\"")
            if item in sids:
                titles[item] = clean_text(meta.get("title", ""))
    return Catalogue(sids=sids, titles=titles, index_sha256=hashlib.sha256(raw).hexdigest())
