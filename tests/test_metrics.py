import math

import pytest

from minirec.metrics import rank_of, ranking_metrics


def test_rank_is_first_matching_sid():
    assert rank_of(["x", "t", "t"], "t") == 1
    assert rank_of(["x", "y"], "t") is None


def test_metrics_against_hand_computed_values():
    # ranks: hit at 0, hit at 2, miss, hit at 7
    m = ranking_metrics([0, 2, None, 7], ks=(1, 3, 10))
    assert m["HR@1"] == 0.25 and m["HR@3"] == 0.5 and m["HR@10"] == 0.75
    assert m["NDCG@1"] == pytest.approx(0.25)
    assert m["NDCG@3"] == pytest.approx((1 + 1 / math.log2(4)) / 4)  # 1 + 0.5
    assert m["NDCG@10"] == pytest.approx((1 + 0.5 + 1 / math.log2(9)) / 4)
    assert m["MRR"] == pytest.approx((1 + 1 / 3 + 1 / 8) / 4)
    assert m["MRR@3"] == pytest.approx((1 + 1 / 3) / 4)


def test_no_rows_is_an_error():
    with pytest.raises(ValueError):
        ranking_metrics([])
