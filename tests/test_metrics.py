import math

import pytest

from minirec.metrics import format_table, rank_of, ranking_metrics, split_metrics_by_repeat


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


def test_hr_and_ndcg_split_by_repeat_rows():
    from minirec.data import Interaction

    rows = [Interaction("u", ("a", "b"), "b"), Interaction("u", ("a",), "c"), Interaction("v", ("c",), "d"),
            Interaction("v", ("d", "e"), "d")]
    m = split_metrics_by_repeat([3, 0, None, 12], rows)
    assert m == {"repeat_rows": 2, "new_rows": 2, "HR@10_repeat": 0.5,
                 "NDCG@10_repeat": pytest.approx(0.5 / math.log2(5)),
                 "HR@10_new": 0.5, "NDCG@10_new": 0.5}
    # only the shown history counts: with max_history 1, the first row's "b" is shown, the last row's "d" is not
    assert split_metrics_by_repeat([3, 0, None, 12], rows, max_history=1)["repeat_rows"] == 1
    assert split_metrics_by_repeat([0], rows[1:2])["HR@10_repeat"] is None
    with pytest.raises(ValueError):
        split_metrics_by_repeat([0], rows)


def test_table_summary_line_lists_what_the_metrics_hold():
    m = {**ranking_metrics([0, None], ks=(1,)), "invalid_predictions": 0, "coverage@10": 0.5, "rows": 2,
         "wall_seconds": 1.0}
    last = format_table(m, (1,)).splitlines()[-1]
    assert last == "MRR 0.5000 | invalid predictions 0 | coverage@10 0.5000 | 2 rows in 1.0s"  # as evaluate.py printed
    m.pop("invalid_predictions")
    m.update(repeat_rows=1, **{"HR@10_repeat": 1.0, "HR@10_new": None})
    assert "HR@10 repeat 1.0000 (1 rows) / new n/a" in format_table(m, (1,))
