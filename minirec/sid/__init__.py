"""Semantic IDs: the catalogue (item <-> SID, titles, collision groups) and building SIDs from
item text (embeddings, quantizers, collisions; ``python -m minirec.sid build``). The prefix
trie that constrains decoding over these SIDs lives in :mod:`minirec.constrained`."""

from minirec.sid.catalogue import Catalogue, clean_text, load_catalogue, sid_string, split_sid

__all__ = ["Catalogue", "clean_text", "load_catalogue", "sid_string", "split_sid"]
