"""Sibling-GRPO: advantages checked against a hand computation, and the term seen in a real TRL step."""

from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from minirec.errors import MinirecError
from minirec.rl import RLConfig
from minirec.rl.sibling import sibling_advantages, sibling_loss, sid_token_mask
from minirec.rl.train import train
from minirec.sft import SFTConfig
from minirec.sft.train import train as sft_train
from tests.rl.test_grpo_e2e import RL, SFT

EOS, PAD = 99, 98


def k(spread):
    """A node's advantage when its parent has two children whose rewards differ by 2 x spread:
    the population std of the two node rewards is spread, so A = +-spread / (spread + 1e-4)."""
    return spread / (spread + 1e-4)


def completions(*sids):
    """TRL's layout: each SID, EOS, then right padding; and the mask that ends at EOS."""
    width = max(map(len, sids)) + 1
    ids = torch.tensor([list(s) + [EOS] + [PAD] * (width - len(s) - 1) for s in sids])
    mask = torch.tensor([[1] * (len(s) + 1) + [0] * (width - len(s) - 1) for s in sids])
    return ids, sid_token_mask(ids, mask, [EOS])


def test_hand_built_group():
    # a1=1, a2=2; b1..b3 = 11..13; c1..c4 = 21..24. Rewards: only A hits.
    a, b, c, d = (1, 11, 21), (1, 11, 22), (1, 12, 23), (2, 13, 24)
    ids, mask = completions(a, b, c, d)
    # Root: a1 holds A, B, C (R = 1/3), a2 holds D (R = 0): mean 1/6, population std 1/6.
    # Under a1: b1 holds A, B (R = 1/2), b2 holds C (R = 0): mean 1/4, std 1/4. Under a2: only b3 -> 0.
    # Under a1 b1: c1 (R = 1), c2 (R = 0): mean 1/2, std 1/2. Under a1 b2 and a2 b3: one child -> 0.
    # EOS never branches -> 0.
    want = torch.tensor([[k(1 / 6), k(1 / 4), k(1 / 2), 0],
                         [k(1 / 6), k(1 / 4), -k(1 / 2), 0],
                         [k(1 / 6), -k(1 / 4), 0, 0],
                         [-k(1 / 6), 0, 0, 0]])
    got = sibling_advantages(ids, mask, torch.tensor([1.0, 0, 0, 0]), group_size=4)
    torch.testing.assert_close(got, want)
    # Groups are separate trees: the same four SIDs as a second group, where only D hits: at the root
    # a1 (R = 0) and a2 (R = 1), std 1/2; below, every sibling set has equal rewards (std 0) -> 0.
    both = sibling_advantages(torch.cat([ids, ids]), torch.cat([mask, mask]),
                              torch.tensor([1.0, 0, 0, 0, 0, 0, 0, 1]), group_size=4)
    torch.testing.assert_close(both[:4], want)
    torch.testing.assert_close(both[4:], torch.tensor([[-k(1 / 2), 0, 0, 0]] * 3 + [[k(1 / 2), 0, 0, 0]]))


def test_shared_prefix_gets_no_advantage_and_three_siblings():
    # All share a1 b1; the last level has three children: c1 (two rollouts, R = 1/2), c2 (R = 1), c3 (R = 0).
    ids, mask = completions((1, 11, 21), (1, 11, 21), (1, 11, 22), (1, 11, 23))
    got = sibling_advantages(ids, mask, torch.tensor([1.0, 0, 1, 0]), group_size=4)
    assert torch.all(got[:, :2] == 0) and torch.all(got[:, 3] == 0)
    std = (1 / 6) ** 0.5  # population std of (1/2, 1, 0) with every child counted once; mean 1/2
    torch.testing.assert_close(got[:, 2], torch.tensor([0, 0, 0.5 / (std + 1e-4), -0.5 / (std + 1e-4)]))


def test_longer_sids_padding_and_loss():
    # A collision-level SID (4 tokens) beside 3-token ones: padding and EOS stay 0.
    ids, mask = completions((1, 11, 21, 31), (1, 11, 21, 32), (2, 12, 22), (2, 12, 23))
    got = sibling_advantages(ids, mask, torch.tensor([1.0, 0, 0, 0]), group_size=4)
    assert torch.all(got[~mask] == 0)
    torch.testing.assert_close(got[:2, 3], torch.tensor([k(0.5), -k(0.5)]))
    # On policy the ratio is 1: the loss is minus the per-completion mean of A over SID tokens.
    logps = torch.zeros(ids.shape, requires_grad=True)
    loss = sibling_loss(logps, logps.detach(), got, mask)
    want = -torch.stack([got[i][mask[i]].mean() for i in range(4)]).mean()
    torch.testing.assert_close(loss, want)
    loss.backward()
    torch.testing.assert_close(logps.grad, -got * mask / mask.sum(-1, keepdim=True) / 4)
    with pytest.raises(ValueError, match="whole groups"):
        sibling_advantages(ids, mask, torch.zeros(4), group_size=3)
    with pytest.raises(MinirecError, match="sibling_weight must be >= 0"):
        RLConfig(model_path="x", sibling_weight=-1.0).validate()


def _scoring_process(rank, per_func, weights):
    """What SIDGRPOTrainer._sibling_advantages reads of a trainer: TRL's gathered rewards per function."""
    from collections import defaultdict

    accelerator = SimpleNamespace(process_index=rank, gather=lambda x: x)
    return SimpleNamespace(model=SimpleNamespace(training=True), num_generations=4, _step_rewards=per_func,
                           reward_weights=torch.tensor(weights), eos_token_ids=[EOS], accelerator=accelerator,
                           _metrics={"train": defaultdict(list)})


def test_each_process_scores_its_groups_from_the_gathered_rewards():
    from minirec.rl.trainer import SIDGRPOTrainer

    ids, mask = completions((1, 11, 21), (1, 11, 22), (1, 12, 23), (2, 13, 24))
    # Two reward functions weighted 1 and 0.5, gathered over two processes of one group each:
    # the weighted sums are [1, 0, 0, 0] (process 0) and [0, 0, 0, 1] (process 1).
    per_func = torch.tensor([[1.0, 0], [0, 0], [0.5, -1], [0, 0], [0, 0], [0, 0], [0, 0], [0, 2]])
    whole = sibling_advantages(torch.cat([ids, ids]), torch.cat([mask, mask]),
                               torch.tensor([1.0, 0, 0, 0, 0, 0, 0, 1]), group_size=4)
    for rank in (0, 1):
        process = _scoring_process(rank, per_func, [1.0, 0.5])
        batch = {"completion_ids": ids, "completion_mask": (ids != PAD).long()}  # TRL's: it ends at EOS
        got = SIDGRPOTrainer._sibling_advantages(process, batch)
        torch.testing.assert_close(got, whole[4 * rank: 4 * rank + 4])
        assert process._metrics["train"]["sibling/mean_abs_advantage"] == [pytest.approx(got.abs().sum() / 12)]


@pytest.mark.slow
def test_sibling_term_is_added_to_a_trl_step(tmp_path):
    sft = tmp_path / "sft"
    sft_train(SFTConfig(output_dir=str(sft), use_lora=True, **SFT))
    # Two micro-batches of one group each (gradient accumulation), after TRL's shuffle of the rows.
    flags = dict(model_path=str(sft), use_lora=True, keep_best=False, add_target=True,
                 **{**RL, "eval_rows": 2, "micro_batch_size": 4})
    plain = train(RLConfig(output_dir=str(tmp_path / "plain"), **flags))
    sibling = train(RLConfig(output_dir=str(tmp_path / "sibling"), sibling_weight=1.0, **flags))
    before, after = load_file(str(sft / "adapter_model.safetensors")), load_file(
        str(tmp_path / "sibling" / "adapter_model.safetensors"))
    assert any(not torch.equal(before[k], after[k]) for k in before if "lora_" in k)
    plain_log = next(h for h in plain["log_history"] if "loss" in h)
    log = next(h for h in sibling["log_history"] if "loss" in h)
    assert "sibling/loss" not in plain_log
    assert log["sibling/mean_abs_advantage"] > 0 and log["sibling/loss"] != 0
    # The same rollouts and the same GRPO loss at step 1 (no update yet): the difference is the sibling
    # term, at its step mean over the accumulated micro-batches, and it is in the gradient too.
    assert log["reward"] == pytest.approx(plain_log["reward"])
    assert log["loss"] - plain_log["loss"] == pytest.approx(log["sibling/loss"], abs=2e-4)
    assert log["grad_norm"] != pytest.approx(plain_log["grad_norm"])
