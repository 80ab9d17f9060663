import math

import pytest

from minirec.baselines.scoring import evaluate_ranker, parse_splits, ranked_sids
from minirec.errors import MinirecError


def test_collision_group_takes_one_slot(tiny):
    cat = tiny.catalogue
    assert cat.sid("5") == cat.sid("6")
    sids = ranked_sids(["6", "5", "2", "2", "1"], cat, top_k=3)
    assert sids == [cat.sid("6"), cat.sid("2"), cat.sid("1")]  # "5" and the second "2" dropped


def test_a_collision_sibling_is_a_hit_at_the_groups_rank(tiny):
    # test row 2 targets item 5; the ranking holds its SID twin 6 second: rank 1
    rank_items = lambda row: ["1", "6", "5", "2"]  # noqa: E731
    m = evaluate_ranker(rank_items, tiny.split("test"), tiny.catalogue, ks=(1, 3))
    # row 1 (target 1) at rank 0, row 2 (target 5) at rank 1 since 6 and 5 share a slot
    assert m["HR@1"] == 0.5 and m["HR@3"] == 1.0
    assert m["NDCG@3"] == pytest.approx((1 + 1 / math.log2(3)) / 2)
    assert m["MRR"] == pytest.approx((1 + 1 / 2) / 2)
    assert m["rows"] == 2 and m["repeat_rows"] == 0 and m["HR@10_repeat"] is None


def test_repeat_rows_are_reported_separately(tiny):
    # valid row 2's target 3 is in its history; row 1's target 7 is not
    m = evaluate_ranker(lambda row: ["3", "1"], tiny.split("valid"), tiny.catalogue, ks=(1,))
    assert (m["repeat_rows"], m["HR@10_repeat"], m["HR@10_new"]) == (1, 1.0, 0.0)


@pytest.mark.parametrize("split", ["train", "bogus", "test,test", ""])
def test_unknown_split_is_an_error(split):
    with pytest.raises(MinirecError, match="choose from valid, test"):
        parse_splits(split)


def test_splits_parse():
    assert parse_splits("test") == ("test",) and parse_splits("valid, test") == ("valid", "test")
