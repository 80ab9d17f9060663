import pytest

from minirec.sid import clean_text, split_sid


def test_clean_text_unescapes_double_encoded_entities():
    assert clean_text("1.88&amp;quot; x  35 yd") == '1.88" x 35 yd'


def test_split_sid_round_trip_and_rejects_junk():
    assert split_sid("<a_1><b_22><c_333>") == ("<a_1>", "<b_22>", "<c_333>")
    with pytest.raises(ValueError):
        split_sid("<a_1>junk<b_2>")


def test_collision_groups_on_industrial(catalogue):
    groups = [items for items in catalogue.items_by_sid.values() if len(items) > 1]
    assert len(groups) == 15 and sum(len(g) for g in groups) == 31


def test_sid_tokens_are_ordered_by_level_then_code(catalogue):
    tokens = catalogue.sid_tokens()
    assert tokens[0].startswith("<a_") and tokens[-1].startswith("<c_")
    assert len(tokens) == len(set(tokens)) == 48 + 256 + 256
