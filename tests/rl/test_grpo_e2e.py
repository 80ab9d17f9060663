"""GRPO on CPU on top of tiny SFT runs: adapters move, the base does not, rollouts stay in the catalogue."""

import json
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from minirec.errors import MinirecError
from minirec.rl import RLConfig
from minirec.rl.rollout import SIDRollout
from minirec.rl.rewards import rule_reward
from minirec.rl.train import train, weighted_reward
from minirec.sft import SFTConfig
from minirec.sft.train import train as sft_train
from tests.conftest import INDUSTRIAL

pytestmark = pytest.mark.slow

SFT = dict(data_dir=str(INDUSTRIAL), tiny_hidden_size=64, tiny_num_layers=2, max_train_rows=128, max_valid_rows=8,
           batch_size=16, micro_batch_size=16, max_steps=4, learning_rate=3e-3, report_to="none",
           greedy_eval_rows=0, tasks="next_sid")
RL = dict(max_prompts=16, num_generations=4, prompts_per_step=2, max_steps=1, eval_rows=4, eval_steps=0,
          learning_rate=1e-3, report_to="none", save_steps=1)


@pytest.fixture(scope="module")
def sft_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("rl")
    sft_train(SFTConfig(output_dir=str(root / "lora"), use_lora=True, **SFT))
    sft_train(SFTConfig(output_dir=str(root / "full"), **SFT))
    return root


def adapter(path):
    return load_file(str(path / "adapter_model.safetensors"))


def test_grpo_step_moves_the_adapter_and_keeps_the_base(sft_runs, tmp_path):
    out = tmp_path / "rl"
    # Target-in-group gives every group a positive: with no reward variance and the KL reference
    # equal to the policy at step 0, a GRPO step has no gradient at all.
    metrics = train(RLConfig(model_path=str(sft_runs / "lora"), use_lora=True, output_dir=str(out), keep_best=False,
                             add_target=True, **RL))
    before, after = adapter(sft_runs / "lora"), adapter(out)
    assert before.keys() == after.keys()
    assert any(not torch.equal(before[k], after[k]) for k in before if "lora_" in k)
    logs = {k for h in metrics["log_history"] for k in h}
    assert {"reward", "reward_std", "frac_reward_zero_std", "kl", "valid_HR@10", "valid_NDCG@10"} <= logs
    run = json.loads((out / "run.json").read_text())
    assert run["stage"] == "rl" and run["mode"] == "lora"
    base = load_file(str(sft_runs / "lora" / "base_model" / "model.safetensors"))
    base_after = load_file(str(out / run["base_model_path"] / "model.safetensors")) if not run[
        "base_model_path"].startswith("/") else load_file(run["base_model_path"] + "/model.safetensors")
    assert all(torch.equal(base[k], base_after[k]) for k in base)


def test_qlora_grpo_runs_a_step_on_cpu(sft_runs, tmp_path):
    metrics = train(RLConfig(model_path=str(sft_runs / "lora"), use_qlora=True, output_dir=str(tmp_path / "q"), **RL))
    assert metrics["steps"] == 1


def test_full_grpo_with_sampling_rollouts(sft_runs, tmp_path):
    metrics = train(RLConfig(model_path=str(sft_runs / "full"), output_dir=str(tmp_path / "f"), beam_search=False,
                             temperature=1.5, reward_type="rule:1,prefix:0.5", **RL))
    assert metrics["steps"] == 1 and (tmp_path / "f" / "model.safetensors").is_file()


def test_resume_from_an_rl_checkpoint(sft_runs, tmp_path):
    out = tmp_path / "r"
    cfg = {**RL, "max_steps": 1}
    train(RLConfig(model_path=str(sft_runs / "lora"), use_lora=True, output_dir=str(out), **cfg))
    (out / "run.json").unlink()
    metrics = train(RLConfig(model_path=str(sft_runs / "lora"), use_lora=True, output_dir=str(out),
                             resume_from_checkpoint="last", **{**cfg, "max_steps": 2}))
    assert metrics["steps"] == 2


def test_rollouts_are_distinct_catalogue_sids_in_beam_order(sft_runs, catalogue):
    from accelerate import Accelerator

    from minirec.decoding import build_trie, decode_sid
    from minirec.modeling.loading import load_trained

    model, tok, _ = load_trained(sft_runs / "full")
    rollout = SIDRollout(tok, build_trie(model, tok, catalogue), num_generations=4)
    prompts = ["Items: " + catalogue.sid("117") + "\nNext:"] * 4 + ["Items: " + catalogue.sid("118") + "\nNext:"] * 4
    out = rollout(prompts, SimpleNamespace(accelerator=Accelerator(cpu=True), model_wrapped=model))
    assert out["beam_rank"] == [0, 1, 2, 3, 0, 1, 2, 3]
    sids = [decode_sid(tok, ids) for ids in out["completion_ids"]]
    assert all(s in catalogue.items_by_sid for s in sids)
    assert len(set(sids[:4])) == 4 and len(set(sids[4:])) == 4
    assert all(ids[-1] == tok.eos_token_id for ids in out["completion_ids"])


def test_clear_errors(sft_runs, tmp_path):
    with pytest.raises(MinirecError, match="no run.json"):
        train(RLConfig(model_path=str(tmp_path), output_dir=str(tmp_path / "x"), **RL))
    with pytest.raises(MinirecError, match="pass --use_lora True"):
        train(RLConfig(model_path=str(sft_runs / "lora"), output_dir=str(tmp_path / "x"), **RL))
    with pytest.raises(MinirecError, match="GRPO needs at least 2"):
        RLConfig(model_path="x", num_generations=1).validate()


@pytest.mark.parametrize("mode", ["lora", "freeze"])
def test_fused_head_log_probs_include_the_trainable_sid_rows(tiny_model, mode):
    """TRL's fused LM head must score with the adapted SID rows, and with the base ones when disabled."""
    from trl.trainer.utils import add_fused_lm_head

    from minirec.modeling.adapters import wrap_model
    from minirec.rl.lm_head import expose_adapted_lm_head

    model, tok, ids = tiny_model
    add_fused_lm_head(model, outputs=("log_probs",))
    model = wrap_model(model, mode, ids, lora_r=4)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "trainable_tokens_delta" in n:
                p.add_(torch.randn_like(p))
    expose_adapted_lm_head(model)
    x = torch.tensor([[5, 6, ids[0], ids[50], ids[300]]])
    labels = x.clone()
    labels[:, :2] = -100

    def plain_logps():
        logits = model(input_ids=x).logits[:, :-1].float()
        return logits.log_softmax(-1).gather(-1, x[:, 1:, None])[..., 0][:, 1:]

    fused = model(input_ids=x, labels=labels, fused_lm_head=True).log_probs[:, 1:]
    torch.testing.assert_close(fused, plain_logps(), atol=1e-4, rtol=1e-4)
    with model.disable_adapter():
        fused_ref = model(input_ids=x, labels=labels, fused_lm_head=True).log_probs[:, 1:]
        torch.testing.assert_close(fused_ref, plain_logps(), atol=1e-4, rtol=1e-4)
    assert not torch.allclose(fused, fused_ref)


@pytest.mark.parametrize("path", ["full", "lora_on_full", "continue_lora"])
def test_kl_reference_is_the_sft_policy_on_every_path(sft_runs, tmp_path, path):
    """At the first step the policy is the SFT model, so KL to the reference must be ~0. With the
    reference = "adapter disabled" for a continued SFT adapter, it would be the pre-SFT base."""
    model_path = sft_runs / ("lora" if path == "continue_lora" else "full")
    flags = {"use_lora": True} if path != "full" else {}
    metrics = train(RLConfig(model_path=str(model_path), output_dir=str(tmp_path / path), beta=0.1,
                             **{**RL, "eval_rows": 2}, **flags))
    kls = [h["kl"] for h in metrics["log_history"] if "kl" in h]
    assert kls and abs(kls[0]) < 1e-5, kls
    if path == "continue_lora":
        assert not (tmp_path / path / "ref").exists()  # the frozen reference copy is not saved


def test_target_in_group_puts_the_target_in_every_group(sft_runs, catalogue):
    from accelerate import Accelerator

    from minirec.decoding import build_trie, decode_sid
    from minirec.modeling.loading import load_trained

    model, tok, _ = load_trained(sft_runs / "full")
    rollout = SIDRollout(tok, build_trie(model, tok, catalogue), num_generations=4, add_target=True)
    prompt = "Items: " + catalogue.sid("117") + "\nNext:"
    plain = SIDRollout(tok, rollout.trie, num_generations=4)(
        [prompt] * 4, SimpleNamespace(accelerator=Accelerator(cpu=True), model_wrapped=model))
    beams = [decode_sid(tok, ids) for ids in plain["completion_ids"]]
    missing = next(s for s in catalogue.items_by_sid if s not in beams)
    trainer = SimpleNamespace(accelerator=Accelerator(cpu=True), model_wrapped=model,
                              rollout_targets=[beams[1]] * 4 + [missing] * 4)
    out = rollout([prompt] * 8, trainer)
    sids = [decode_sid(tok, ids) for ids in out["completion_ids"]]
    assert sids[:4] == beams  # the target was found: the group is left as the search made it
    assert sids[4:7] == beams[:3] and sids[7] == missing  # missed: it takes the last place
    assert rollout.pop_stats() == {"frac_groups_target_added": 0.5}


def test_dynamic_sampling_swaps_a_missed_group_for_a_pool_prompt_that_hits(sft_runs, catalogue):
    from accelerate import Accelerator

    from minirec.decoding import build_trie, decode_sid
    from minirec.modeling.loading import load_trained
    from minirec.tokenization import encode_prompts

    model, tok, _ = load_trained(sft_runs / "full")
    trie, cpu = build_trie(model, tok, catalogue), Accelerator(cpu=True)
    first, other = ("Items: " + catalogue.sid(i) + "\nNext:" for i in ("117", "118"))
    beams = {}
    for p in (first, other):
        out = SIDRollout(tok, trie, num_generations=4)([p] * 4, SimpleNamespace(accelerator=cpu, model_wrapped=model))
        beams[p] = [decode_sid(tok, ids) for ids in out["completion_ids"]]
    missing = next(s for s in catalogue.items_by_sid if s not in beams[first])
    # the pool holds one prompt whose rollouts hit its target (at rank 2) and one that never can
    pool = ([first, other], [missing, beams[other][2]], ["117", "118"])  # prompts, targets, histories
    rollout = SIDRollout(tok, trie, num_generations=4, refill_pool=pool, refill_rounds=8,
                         group_rewards=weighted_reward([rule_reward], [1.0]))
    targets = [beams[first][0]] * 4 + [missing] * 4
    trainer = SimpleNamespace(accelerator=cpu, model_wrapped=model, rollout_targets=targets,
                              rollout_histories=["117"] * 8)
    out = rollout([first] * 8, trainer)
    assert out["history"] == ["117"] * 4 + ["118"] * 4  # the replacement's own history reaches the rewards
    sids = [decode_sid(tok, ids) for ids in out["completion_ids"]]
    assert sids[:4] == beams[first] and out["target_sid"][:4] == [beams[first][0]] * 4  # a hit stays as it was
    assert sids[4:] == beams[other] and out["target_sid"][4:] == [beams[other][2]] * 4  # a miss is replaced
    assert out["prompt_ids"][4:] == encode_prompts(tok, [other]) * 4 and out["beam_rank"] == [0, 1, 2, 3] * 2
    assert rollout.pop_stats() == {"frac_zero_std_before_refill": 0.5, "frac_groups_refilled": 0.5,
                                   "frac_zero_std_after_refill": 0.0}


def test_add_target_gives_every_group_reward_variance(sft_runs, tmp_path):
    metrics = train(RLConfig(model_path=str(sft_runs / "full"), output_dir=str(tmp_path / "t"), add_target=True,
                             reward_type="rule", **{**RL, "max_steps": 2}))
    zero = [h["frac_reward_zero_std"] for h in metrics["log_history"] if "frac_reward_zero_std" in h]
    assert zero and max(zero) == 0.0
    assert any("frac_groups_target_added" in h for h in metrics["log_history"])
    assert (tmp_path / "t" / "training.png").stat().st_size > 1000


def test_keep_best_saves_the_policy_of_the_best_valid_evaluation(sft_runs, tmp_path):
    """The saved adapter is the one of the best-scoring evaluation (ties keep the earliest), not the last."""
    out = tmp_path / "best"
    metrics = train(RLConfig(model_path=str(sft_runs / "lora"), use_lora=True, output_dir=str(out),
                             **{**RL, "max_steps": 2, "eval_steps": 1, "eval_rows": 16, "learning_rate": 5e-2}))
    scores = [(v["valid_HR@10"] + v["valid_NDCG@10"], v["step"]) for v in metrics["valid_by_step"]]
    best = max(scores, key=lambda s: (s[0], -s[1]))
    assert metrics["kept_step"] == best[1]
    if best[1] == 0:  # the SFT start was best: the saved adapter is the SFT adapter, unchanged
        before, after = adapter(sft_runs / "lora"), adapter(out)
        assert all(torch.equal(before[k], after[k]) for k in before)


def test_rewards_score_the_replacement_target_through_trl(sft_runs, tmp_path, monkeypatch):
    """A refilled group reaches TRL's reward functions with the replacement's target, not the
    dataset row's (else the rewards would score the new rollouts against the old target)."""
    from minirec.rl import rewards, rollout as rollout_module
    from minirec.rl import train as train_module

    seen, produced = [], []

    def recording_rewards(*a, **kw):
        funcs, weights = rewards.build_rewards(*a, **kw)

        def record(completions, target_sid, **rest):
            seen.append(list(target_sid))
            return funcs[0](completions=completions, target_sid=target_sid, **rest)

        record.__name__ = funcs[0].__name__
        return [record], weights

    call = rollout_module.SIDRollout.__call__

    def recording_call(self, prompts, trainer):
        out = call(self, prompts, trainer)
        produced.append((list(trainer.rollout_targets), list(out["target_sid"])))
        return out

    monkeypatch.setattr(train_module, "build_rewards", recording_rewards)
    monkeypatch.setattr(rollout_module.SIDRollout, "__call__", recording_call)
    # Only rows whose target is one chosen SID count as informative: every other group is replaced.
    from minirec.data import load_dataset

    data = load_dataset(SFT["data_dir"], splits=("train",))
    keep = data.catalogue.sid(train_module.select_prompt_rows(data.split("train"), 16, "random", 42)[-1].target)
    monkeypatch.setattr(rollout_module.SIDRollout, "informative",
                        lambda self, seqs, target, history=None: target == keep)
    train(RLConfig(model_path=str(sft_runs / "full"), output_dir=str(tmp_path / "ds"), dynamic_sampling=True,
                   reward_type="rule", **{**RL, "max_steps": 2, "eval_rows": 2}))
    assert produced and len(seen) == len(produced)
    for (_, rolled_targets), scored in zip(produced, seen):
        assert scored == rolled_targets
    assert any(d != r for d, r in produced), "no group was replaced: the test proves nothing"


def test_kl_grows_from_zero_and_the_reference_stays_frozen(sft_runs, tmp_path, monkeypatch):
    """GRPO's KL term is measured against a frozen SFT copy: 0 at the first step, then > 0 as the
    policy moves, and the reference's weights equal the SFT weights after training."""
    from minirec.rl.trainer import SIDGRPOTrainer

    made = []

    def keep(*a, **kw):
        made.append(SIDGRPOTrainer(*a, **kw))
        return made[-1]

    import minirec.rl.trainer as trainer_module

    monkeypatch.setattr(trainer_module, "SIDGRPOTrainer", keep)
    # keep_best False: keep-best would put back the SFT weights that no step beat, hiding the moved policy
    metrics = train(RLConfig(model_path=str(sft_runs / "full"), output_dir=str(tmp_path / "kl"), beta=0.1,
                             keep_best=False, add_target=True,
                             **{**RL, "max_steps": 3, "eval_rows": 2, "learning_rate": 1e-2}))
    kls = [h["kl"] for h in metrics["log_history"] if "kl" in h]
    assert abs(kls[0]) < 1e-5 and max(kls[1:]) > 1e-4, kls
    sft = load_file(str(sft_runs / "full" / "model.safetensors"))
    ref = {n: p for n, p in made[0].ref_model.named_parameters()}
    policy = {n: p for n, p in made[0].model.named_parameters()}
    # (TRL computes the reference's log-probs without gradients; what matters is that it never moves)
    assert all(torch.equal(ref[n].detach().cpu(), sft[n]) for n in sft if n in ref)
    assert any(not torch.equal(policy[n].detach().cpu(), sft[n]) for n in sft if n in policy)


def test_full_grpo_with_a_collaborative_teacher(sft_runs, tmp_path):
    """ranking + cf with dynamic sampling: the teacher gives every group varying rewards, so no
    group is left without signal (a refill's history: test_dynamic_sampling_swaps_...)."""
    from minirec.baselines import sasrec_train
    from minirec.baselines.sasrec import SASRecConfig

    teacher = tmp_path / "sasrec"
    sasrec_train.run(SASRecConfig(data_dir=str(INDUSTRIAL), output_dir=str(teacher), max_epochs=1, max_train_rows=2000,
                                  max_eval_rows=20, split="valid", hidden_size=16, num_heads=1, inner_size=16,
                                  num_layers=1))
    metrics = train(RLConfig(model_path=str(sft_runs / "full"), output_dir=str(tmp_path / "cf"),
                             reward_type="ranking,cf:0.5", cf_model=str(teacher), cf_reward_scale="share",
                             dynamic_sampling=True, **{**RL, "max_steps": 2}))
    logs = [h for h in metrics["log_history"] if "frac_reward_zero_std" in h]
    assert logs and all(h["frac_reward_zero_std"] == 0.0 for h in logs)
    assert all(h["frac_zero_std_before_refill"] == 0.0 for h in metrics["log_history"]
               if "frac_zero_std_before_refill" in h)
    assert any("rewards/cf_reward/mean" in h for h in metrics["log_history"])
    run = json.loads((tmp_path / "cf" / "run.json").read_text())
    assert run["config"]["cf_model"] == str(teacher)
