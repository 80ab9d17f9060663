from minirec.data import Interaction
from minirec.data.sequences import user_sequences


def _windows(user, items, max_history=3):
    return [Interaction(user, tuple(items[max(0, t - max_history):t]), items[t]) for t in range(1, len(items))]


def test_windows_stitch_back_into_one_sequence_per_user():
    rows = _windows("u", list("abcdefg")) + _windows("v", list("xyz"))
    runs = sorted(user_sequences(rows))
    assert runs == [(tuple("abcdefg"), 1), (tuple("xyz"), 1)]


def test_every_train_target_appears_once_and_nothing_else_is_a_target():
    rows = _windows("u", list("abcdefg"))[2:]  # the user's first two windows are not in this split
    (items, first), = user_sequences(rows)
    assert items[first:] == tuple(r.target for r in rows)
    assert items[:first] == rows[0].history  # context only: never a target


def test_a_row_that_does_not_continue_the_run_starts_a_new_one():
    rows = [Interaction("u", ("a",), "b"), Interaction("u", ("q", "r"), "s"), Interaction("u", ("r", "s"), "t")]
    assert user_sequences(rows) == [(("a", "b"), 1), (("q", "r", "s", "t"), 2)]


def test_shipped_industrial_train_split_keeps_every_target(industrial):
    rows = industrial.split("train")
    runs = user_sequences(rows)
    assert sum(len(items) - first for items, first in runs) == len(rows)
    assert sorted(t for items, first in runs for t in items[first:]) == sorted(r.target for r in rows)
