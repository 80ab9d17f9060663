"""The cf reward: a collaborative teacher scores each rollout from the prompt's history only."""

import math

import pytest
import torch

from minirec.baselines.sasrec import SASRec, SASRecConfig
from minirec.errors import MinirecError
from minirec.rl.rewards import CFReward, RankingReward, build_rewards
from minirec.rl.train import weighted_reward
from minirec.sid import Catalogue
from minirec.teacher import CFTeacher

SIDS = {"1": ("<a_1>", "<b_1>"), "2": ("<a_1>", "<b_2>"), "3": ("<a_2>", "<b_1>"), "4": ("<a_2>", "<b_2>"),
        "5": ("<a_3>", "<b_1>"), "6": ("<a_3>", "<b_1>")}  # items 5 and 6: one collision group
A, B, C, D, E = "<a_1><b_1>", "<a_1><b_2>", "<a_2><b_1>", "<a_2><b_2>", "<a_3><b_1>"


@pytest.fixture
def teacher():
    catalogue = Catalogue(SIDS, index_sha256="a" * 64)
    torch.manual_seed(0)
    config = SASRecConfig(hidden_size=16, num_heads=1, inner_size=16, num_layers=1, dropout=0.0)
    model = SASRec(len(SIDS), config)
    with torch.no_grad():
        model.item_emb.weight.normal_(0, 1.0)
    return CFTeacher(model, config, list(SIDS), catalogue.index_sha256, "memory"), catalogue


def by_hand(teacher, history):
    """{SID: log p} summed over collision groups, from the teacher's item softmax."""
    p = teacher.item_logp([history])[0].exp()
    out = {}
    for j, item in enumerate(teacher.items):
        sid = "".join(SIDS[item])
        out[sid] = out.get(sid, 0.0) + float(p[j])
    return {s: math.log(v) for s, v in out.items()}


def test_cf_reward_by_hand_in_every_scale(teacher):
    teacher, catalogue = teacher
    completions, ranks = [A, B, E, C, D, A], [0, 1, 2, 0, 1, 2]  # two groups of 3
    history = ["1 2"] * 3 + ["3"] * 3
    first, second = by_hand(teacher, ["1", "2"]), by_hand(teacher, ["3"])
    want = [first[A], first[B], first[E], second[C], second[D], second[A]]
    logp = CFReward(teacher, catalogue, "logp")(completions, history=history, beam_rank=ranks)
    assert logp == pytest.approx(want, abs=1e-5)
    share = CFReward(teacher, catalogue, "share")(completions, history=history, beam_rank=ranks)
    for group in (slice(0, 3), slice(3, 6)):
        probs = [math.exp(v) for v in want[group]]
        assert share[group] == pytest.approx([p / sum(probs) for p in probs], abs=1e-5)
    rank = CFReward(teacher, catalogue, "rank")(completions, history=history, beam_rank=ranks)
    for group in (slice(0, 3), slice(3, 6)):
        order = sorted(range(3), key=lambda j: -want[group][j])
        assert [rank[group][j] for j in order] == pytest.approx([1.0, 1 / math.log2(3), 0.5])


def test_the_teacher_never_sees_the_target(teacher, monkeypatch):
    teacher, catalogue = teacher
    seen = []
    real = teacher.item_logp
    monkeypatch.setattr(teacher, "item_logp", lambda histories: seen.append(histories) or real(histories))
    reward = CFReward(teacher, catalogue)
    one = reward([A, B], history=["1 2"] * 2, beam_rank=[0, 1], target_sid=[A, A])
    two = reward([A, B], history=["1 2"] * 2, beam_rank=[0, 1], target_sid=[D, D])
    assert one == two and seen == [[["1", "2"]], [["1", "2"]]]  # the history only, whatever the target


def test_a_group_that_misses_the_target_gets_a_varying_reward_with_cf(teacher):
    teacher, catalogue = teacher
    completions, ranks, targets = [A, B, E], [0, 1, 2], [D] * 3  # no rollout is the target
    ranking_only = weighted_reward([RankingReward(3, with_rule=True)], [1.0])(completions, targets, ranks, ["1"] * 3)
    assert max(ranking_only) == min(ranking_only)  # zero std: no signal under ranking alone
    funcs, weights = build_rewards("ranking,cf:0.2", catalogue, 3, teacher=teacher)
    with_cf = weighted_reward(funcs, weights)(completions, targets, ranks, ["1"] * 3)
    assert max(with_cf) - min(with_cf) > 1e-3


def test_cf_reward_needs_a_teacher_and_a_known_scale(teacher):
    teacher, catalogue = teacher
    with pytest.raises(MinirecError, match="needs --cf_model"):
        build_rewards("ranking,cf:0.5", catalogue, 3)
    with pytest.raises(MinirecError, match="--cf_reward_scale 'raw'"):
        CFReward(teacher, catalogue, "raw")
