"""Dynamic sampling's filter (a group is kept when its rewards vary) and its draws, without a model."""

import pytest

from minirec.rl.rewards import RankingReward, prefix_reward, rule_reward
from minirec.rl.rollout import SIDRollout
from minirec.rl.train import weighted_reward


@pytest.fixture
def sids(catalogue):
    """A target, a sibling sharing its first two levels, and a SID with another first level."""
    by_prefix = {}
    for sid in catalogue.items_by_sid:
        by_prefix.setdefault(sid.rsplit("<", 1)[0], []).append(sid)
    target, sibling = next(v for v in by_prefix.values() if len(v) >= 2)[:2]
    other = next(s for s in catalogue.items_by_sid if s.split(">")[0] != target.split(">")[0])
    far = [s for s in catalogue.items_by_sid if s.split(">")[0] != target.split(">")[0]][1:4]
    return target, sibling, other, far


def rollout_with(tokenizer, funcs, weights, **kw):
    return SIDRollout(tokenizer, trie=None, num_generations=4, refill_pool=([], [], []),
                      group_rewards=weighted_reward(funcs, weights), **kw)


def ids(tokenizer, sids):
    return [tuple(tokenizer(s, add_special_tokens=False)["input_ids"]) for s in sids]


def test_a_group_is_kept_when_its_rewards_vary(tiny_model, sids):
    _, tok, _ = tiny_model
    target, sibling, other, far = sids
    rule = rollout_with(tok, [rule_reward], [1.0])
    assert rule.informative(ids(tok, [target] + far), target)  # a hit among misses
    assert not rule.informative(ids(tok, [other] + far), target)  # all miss: all 0
    assert not rule.informative(ids(tok, [target] * 4), target)  # sampled, all the target: all 1, no signal
    ranking = rollout_with(tok, [RankingReward(4, with_rule=True)], [1.0])
    assert not ranking.informative(ids(tok, [other] + far), target)
    assert ranking.informative(ids(tok, far + [target]), target)
    # partial credit: no rollout is the target, but the sibling shares two levels with it
    prefix = rollout_with(tok, [prefix_reward], [1.0])
    assert prefix.informative(ids(tok, [sibling] + far), target)
    assert not rule.informative(ids(tok, [sibling] + far), target)
    assert not prefix.informative(ids(tok, [target, sibling]), target)  # fewer than G rollouts


def test_replacements_are_drawn_without_replacement_within_a_step(tiny_model, sids):
    _, tok, _ = tiny_model
    target, _, other, far = sids
    pool = ([f"prompt {i}" for i in range(5)], [target] * 5, ["1 2"] * 5)
    rollout = SIDRollout(tok, None, 4, refill_pool=pool, refill_rounds=8,
                         group_rewards=weighted_reward([rule_reward], [1.0]))
    drawn = []

    def never_hit(model, prompt_ids):  # every rollout misses, so every round draws again
        drawn.extend(tok.decode(p) for p in prompt_ids)
        return [ids(tok, [other] + far)] * len(prompt_ids)

    rollout._rollouts = never_hit
    sequences = [ids(tok, [other] + far)] * 2
    rollout._refill(None, sequences, [[1], [2]], [target, target], ["3", "4"])
    assert sorted(drawn) == sorted(pool[0])  # all 5 tried once each, none twice (8 rounds allowed)
    assert rollout.pop_stats() == {"frac_zero_std_before_refill": 1.0, "frac_groups_refilled": 0.0,
                                   "frac_zero_std_after_refill": 1.0}
    assert rollout.pop_stats() == {}  # counters restart after each log


def test_logged_fractions_pool_every_process_and_skip_the_evaluation_line(tiny_model, monkeypatch):
    """Each process counts its own groups; the log must show the whole step's fractions (not the
    main process's share), and the valid-evaluation log line must not swallow the counters."""
    from types import SimpleNamespace

    import torch

    from minirec.rl import callbacks

    _, tok, _ = tiny_model
    rollout = SIDRollout(tok, None, 4, refill_pool=([], [], []), group_rewards=lambda *a: [0.0])
    rollout.stats.update(groups=8, zero_std_before=8, refilled=6, zero_std_after=2)  # this process
    other = torch.tensor([8, 0, 0, 0, 0])  # another process: 8 groups, all informative

    accelerator = SimpleNamespace(device="cpu", reduce=lambda t, op: t + other)
    ev = callbacks.RankingEval(None, [], None, eval_steps=0, rollout=rollout)
    ev.trainer = SimpleNamespace(accelerator=accelerator)
    monkeypatch.setattr(callbacks, "world_size", lambda: 2)
    state = SimpleNamespace(log_history=[{}])
    ev.on_log(None, state, None, logs={"valid_HR@10": 0.1})
    assert rollout.stats["groups"] == 8  # the evaluation line left the counters alone
    logs = {"loss": 1.0}
    ev.on_log(None, state, None, logs=logs)
    assert logs["frac_zero_std_before_refill"] == 0.5 and logs["frac_groups_refilled"] == 0.375
    assert logs["frac_zero_std_after_refill"] == 0.125 and state.log_history[-1] == {k: logs[k] for k in logs
                                                                                    if k.startswith("frac")}


def test_dynamic_sampling_is_refused_under_fsdp(monkeypatch):
    """Processes make different numbers of generate calls with dynamic sampling: FSDP would hang."""
    from minirec.errors import MinirecError
    from minirec.rl import RLConfig
    from minirec.rl.config import fsdp_requested

    monkeypatch.setenv("ACCELERATE_USE_FSDP", "false")
    RLConfig(model_path="x", dynamic_sampling=True).validate()
    assert fsdp_requested(["full_shard"]) and not fsdp_requested([])
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    with pytest.raises(MinirecError, match="FSDP"):
        RLConfig(model_path="x", dynamic_sampling=True).validate()
    RLConfig(model_path="x", dynamic_sampling=False).validate()
