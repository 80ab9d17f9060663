import math

import numpy as np
import pytest

from minirec.errors import MinirecError
from minirec.rl.rewards import (RankingReward, SemanticReward, build_rewards, parse_reward_spec, prefix_reward,
                                rank_penalties, rule_reward)
from minirec.sid import Catalogue
from minirec.sid.text import save_item_embeddings

T, X, Y, Z = "<a_1><b_1><c_1>", "<a_1><b_1><c_2>", "<a_1><b_2><c_1>", "<a_2><b_1><c_1>"


def test_rule():
    assert rule_reward([T, X], target_sid=[T, T]) == [1.0, 0.0]


def test_rank_penalties_sum_to_minus_one_and_fall_with_rank():
    p = rank_penalties(4)
    assert sum(p) == pytest.approx(-1.0)
    assert p[0] < p[1] < p[2] < p[3] < 0
    assert p[0] / p[1] == pytest.approx(math.log2(3) / math.log2(2))


def test_ranking_penalises_wrong_items_only_in_groups_with_a_hit():
    # two groups of 3 (beam ranks 0,1,2); the first contains the target at rank 1, the second does not
    completions = [X, T, Y, X, Y, Z]
    ranks = [0, 1, 2, 0, 1, 2]
    targets = [T] * 6
    p = rank_penalties(3)
    only = RankingReward(3, with_rule=False)(completions, target_sid=targets, beam_rank=ranks)
    assert only == pytest.approx([p[0], 0.0, p[2], 0.0, 0.0, 0.0])
    both = RankingReward(3, with_rule=True)(completions, target_sid=targets, beam_rank=ranks)
    assert both == pytest.approx([p[0], 1.0, p[2], 0.0, 0.0, 0.0])


def test_identical_prompts_with_different_targets_are_scored_per_row():
    # the same history twice in a row (two groups) with different targets: no dict keyed by prompt
    r = RankingReward(2, with_rule=True)([T, X, T, X], target_sid=[T, T, X, X], beam_rank=[0, 1, 0, 1])
    p = rank_penalties(2)
    assert r == pytest.approx([1.0, p[1], p[0], 1.0])


def test_prefix_gives_partial_credit_per_level():
    assert prefix_reward([T, X, Y, Z], target_sid=[T] * 4) == pytest.approx([1.0, 2 / 3, 1 / 3, 0.0])


def test_semantic_reward(tmp_path):
    cat = Catalogue(sids={"1": ("<a_1>", "<b_1>", "<c_1>"), "2": ("<a_1>", "<b_1>", "<c_2>")})
    save_item_embeddings(tmp_path / "e.npy", np.array([[1.0, 0.0], [1.0, 1.0]]), ["1", "2"])
    r = SemanticReward(cat, tmp_path / "e.npy")
    assert r([T, X], target_sid=[T, T]) == pytest.approx([1.0, 1 / math.sqrt(2)])
    with pytest.raises(MinirecError, match="not a catalogue SID"):
        r([Z], target_sid=[T])
    with pytest.raises(MinirecError, match="needs --item_embeddings"):
        SemanticReward(cat, "")


def test_reward_spec_parsing():
    assert parse_reward_spec("rule:1,prefix:0.5") == [("rule", 1.0), ("prefix", 0.5)]
    with pytest.raises(MinirecError, match="unknown reward 'hit'"):
        parse_reward_spec("hit")
    funcs, weights = build_rewards("ranking,prefix:0.25", Catalogue(sids={"1": ("<a_1>",)}), 4)
    assert weights == [1.0, 0.25] and len(funcs) == 2


@pytest.mark.parametrize("array, message", [
    (np.array([[1.0, 0.0], [np.nan, 1.0]]), r"1 row\(s\) hold NaN or inf \(first: row 1, item '2'\)"),
    (np.array([[np.inf, 0.0], [1.0, 1.0]]), "NaN or inf"),
    (np.array([[1.0, 0.0], [0.0, 0.0]]), "hold only zeros"),
    (np.array([1.0, 0.0]), "expected a 2-D numeric array"),
    (np.array([[1.0, 0.0]]), "1 rows but the catalogue has 2 items"),
])
def test_semantic_embeddings_are_checked_when_loaded(tmp_path, array, message):
    cat = Catalogue(sids={"1": ("<a_1>", "<b_1>", "<c_1>"), "2": ("<a_1>", "<b_1>", "<c_2>")})
    np.save(tmp_path / "e.npy", array)
    with pytest.raises(MinirecError, match=message):
        SemanticReward(cat, tmp_path / "e.npy")


def test_reward_spec_errors():
    for spec, message in (("rule,rule", "given twice"), ("rule:0,prefix:0", "every weight is 0"),
                          ("rule:nan", "must be a number"), ("ranking,ranking_only", "already is rule")):
        with pytest.raises(MinirecError, match=message):
            parse_reward_spec(spec)
