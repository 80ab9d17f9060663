"""Semantic IDs: the catalogue (item <-> SID) and the prefix trie that constrains decoding."""

from minirec.sid.catalogue import Catalogue, clean_text, load_catalogue, sid_string, split_sid

__all__ = ["Catalogue", "clean_text", "load_catalogue", "sid_string", "split_sid"]
