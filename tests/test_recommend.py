import pytest

from minirec.errors import MinirecError
from minirec.recommend import format_recommendations, resolve_history


def test_history_accepts_sids_ids_and_titles(catalogue):
    title = catalogue.title("118")
    sid = catalogue.sid("119")
    assert resolve_history(["117", title.upper()], catalogue) == ["117", "118"]  # titles: case-insensitive
    assert resolve_history(["117", sid], catalogue) == ["117", "119"]
    assert resolve_history(f"117|{title}|{sid}", catalogue, sep="|") == ["117", "118", "119"]


def test_unknown_history_items_are_an_error(catalogue):
    with pytest.raises(MinirecError, match="2 unknown item"):
        resolve_history("117,<a_999><b_1><c_1>,no such thing", catalogue)
    with pytest.raises(MinirecError, match="empty"):
        resolve_history(" , ", catalogue)


def test_collision_groups_list_every_item(catalogue):
    sid, items = next((s, i) for s, i in catalogue.items_by_sid.items() if len(i) > 1)
    text = format_recommendations([(sid, -1.0)], catalogue)
    assert all(f"item {i}" in text for i in items)
