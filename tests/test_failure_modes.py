"""Tests meant to fail when a behaviour breaks, not just when a command crashes.

* a real SIGKILL in the middle of ``sft.py``, then ``--resume_from_checkpoint last``: the resumed
  run trains only the missing steps and is step for step identical to an uninterrupted run
  (same losses, learning rates and gradient norms), so a restart from step 0, a lost scheduler
  or a lost optimizer state each fail it;
* the documented QLoRA path, SFT -> RL -> evaluate -> merge, with 4-bit layers in the RL policy;
* one short SFT step of 8-bit LoRA, DoRA, rsLoRA and gradient checkpointing (full, LoRA, QLoRA):
  the loss is finite, the trainable weights of that variant moved, and with checkpointing each
  decoder layer runs again in the backward pass;
* one GRPO step of each RL variant (semantic reward, GSPO, every loss type): finite loss, the
  adapter moved.
"""

import json
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from minirec.rl import RLConfig
from minirec.rl.train import train as rl_train
from minirec.sft import SFTConfig
from minirec.sft.train import train as sft_train
from minirec.sid.text import save_item_embeddings
from tests.conftest import INDUSTRIAL, ROOT
from tests.rl.test_grpo_e2e import RL, SFT

pytestmark = pytest.mark.slow


def adapter(path):
    return load_file(str(path / "adapter_model.safetensors"))


def moved(before, after, must_contain="lora_"):
    """Names of the tensors holding ``must_contain`` that differ between two state dicts."""
    assert before.keys() == after.keys()
    return [k for k in before if must_contain in k and not torch.equal(before[k], after[k])]


def finite_losses(log_history):
    losses = [h["loss"] for h in log_history if "loss" in h]
    assert losses and all(math.isfinite(x) for x in losses), losses
    return losses


# --- 1. resume after a real SIGKILL ----------------------------------------------------------------

KILL_STEPS, KILL_EVERY = 12, 2


def sft_command(out):
    """A tiny full fine-tuning run that checkpoints every KILL_EVERY steps and logs every step."""
    return [sys.executable, "sft.py", "--output_dir", str(out), "--data_dir", str(INDUSTRIAL),
            "--tiny_hidden_size", "64", "--tiny_num_layers", "2", "--max_train_rows", "512", "--max_valid_rows", "8",
            "--batch_size", "32", "--micro_batch_size", "8", "--max_steps", str(KILL_STEPS),
            "--eval_steps", str(KILL_EVERY), "--select_by", "loss", "--early_stopping_patience", "0",
            "--logging_steps", "1", "--learning_rate", "3e-3", "--report_to", "none", "--greedy_eval_rows", "0",
            "--tasks", "next_sid"]


def checkpoint_state(out):
    """(path, trainer_state) of a complete checkpoint (trainer_state.json is written last), or None."""
    for state in sorted(out.glob("checkpoint-*/trainer_state.json")):
        try:
            return state.parent, json.loads(state.read_text())
        except (OSError, ValueError):  # being written
            continue
    return None


def kill_at_first_checkpoint(cmd, out, env, timeout=300):
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    found = None
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            found = checkpoint_state(out)
            if found:
                os.kill(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.01)
    finally:
        if proc.poll() is None and not found:
            os.kill(proc.pid, signal.SIGKILL)
        output = proc.communicate()[0].decode(errors="replace")
    assert found, f"no checkpoint appeared before the run ended (rc {proc.returncode}):\n{output[-3000:]}"
    assert proc.returncode == -signal.SIGKILL, f"the run ended on its own (rc {proc.returncode}) before the kill"
    return found


def train_logs(output: str):
    """The train-step log lines a Trainer process printed (one per step with --logging_steps 1)."""
    return [line for line in output.replace("\r", "\n").splitlines() if "'loss':" in line and "'grad_norm':" in line]


def test_sft_resumes_after_sigkill_where_it_stopped(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TRANSFORMERS_VERBOSITY": "info"}
    killed, reference = tmp_path / "killed", tmp_path / "reference"
    ckpt, state = kill_at_first_checkpoint(sft_command(killed), killed, env)
    k = state["global_step"]
    assert 0 < k < KILL_STEPS and ckpt.name == f"checkpoint-{k}"
    assert not (killed / "run.json").exists()  # a killed run is unfinished, so it may be resumed
    assert (ckpt / "optimizer.pt").is_file() and (ckpt / "scheduler.pt").is_file()

    resumed = subprocess.run(sft_command(killed) + ["--resume_from_checkpoint", "last"], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=600)
    output = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, output[-3000:]
    # The second process trained steps k+1..N only: a restart from 0 would print N step logs.
    assert len(train_logs(output)) == KILL_STEPS - k, train_logs(output)
    assert f"global step {k}" in output  # transformers' "Resuming training from checkpoint ... global step k"
    assert (killed / "run.json").is_file()

    subprocess.run(sft_command(reference), cwd=ROOT, env=env, capture_output=True, check=True, timeout=600)
    logs = {}
    for name in ("killed", "reference"):
        history = json.loads((tmp_path / name / "metrics.json").read_text())["log_history"]
        logs[name] = {h["step"]: h for h in history if "loss" in h}
    assert sorted(logs["killed"]) == list(range(1, KILL_STEPS + 1)) == sorted(logs["reference"])
    # Steps 1..k come from the checkpoint's trainer_state, k+1..N from the second process.
    from_checkpoint = [h["loss"] for h in state["log_history"] if "loss" in h]
    assert from_checkpoint == [logs["killed"][s]["loss"] for s in range(1, k + 1)]
    # Restored scheduler: the lr after the kill is the schedule's (step 1 of the warm-up is 0).
    # Restored optimizer (Adam moments), weights, data order and RNG: identical losses and grad norms.
    for s in range(k + 1, KILL_STEPS + 1):
        got, want = logs["killed"][s], logs["reference"][s]
        assert got["learning_rate"] == pytest.approx(want["learning_rate"], rel=1e-6), s
        assert got["loss"] == pytest.approx(want["loss"], rel=1e-5, abs=1e-6), s
        assert got["grad_norm"] == pytest.approx(want["grad_norm"], rel=1e-4), s
    assert logs["killed"][k + 1]["learning_rate"] != logs["reference"][1]["learning_rate"]


# --- 2. the documented QLoRA path ----------------------------------------------------------------

def linear4bit_count(model):
    import bitsandbytes as bnb

    return sum(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())


@pytest.fixture(scope="module")
def qlora_sft(tmp_path_factory):
    out = tmp_path_factory.mktemp("qlora") / "sft"
    sft_train(SFTConfig(output_dir=str(out), use_qlora=True, **SFT))
    return out


def test_qlora_sft_rl_evaluate_merge(qlora_sft, tmp_path, monkeypatch):
    from minirec.evaluate import evaluate
    from minirec.merge import merge
    from minirec.modeling.loading import load_trained
    from minirec.rl import train as rl_module

    policies = []
    load_policy = rl_module._load_policy

    def spy(config, run, tokenizer):
        model, peft_config, mode = load_policy(config, run, tokenizer)
        policies.append((linear4bit_count(model), mode))
        return model, peft_config, mode

    monkeypatch.setattr(rl_module, "_load_policy", spy)
    rl_out = tmp_path / "rl"
    metrics = rl_train(RLConfig(model_path=str(qlora_sft), use_qlora=True, output_dir=str(rl_out), keep_best=False,
                                add_target=True, **{**RL, "eval_rows": 2}))
    assert metrics["steps"] == 1
    finite_losses(metrics["log_history"])
    assert policies and policies[0][0] > 0 and policies[0][1] == "qlora", policies
    run = json.loads((rl_out / "run.json").read_text())
    assert run["mode"] == "qlora" and run["quantization"] == "4bit" and run["stage"] == "rl"
    assert moved(adapter(qlora_sft), adapter(rl_out))

    model, _, _ = load_trained(rl_out)  # loads 4-bit, as the run says
    assert linear4bit_count(model) > 0
    m = evaluate(str(rl_out), split="test", num_beams=5, batch_size=4, max_rows=4, output_dir=str(tmp_path / "ev"))
    assert m["rows"] == 4 and m["invalid_predictions"] == 0

    merged = merge(str(rl_out), str(tmp_path / "merged"))
    merged_run = json.loads((merged / "run.json").read_text())
    assert merged_run["mode"] == "full" and merged_run["quantization"] is None
    full, tok, _ = load_trained(merged)
    assert linear4bit_count(full) == 0 and (merged / "model.safetensors").is_file()
    unmerged, _, _ = load_trained(rl_out, quantization=None)  # the adapter on the full-precision base
    batch = torch.tensor([[tok.convert_tokens_to_ids("<a_1>"), 5, 6]])
    with torch.no_grad():
        torch.testing.assert_close(full.eval()(input_ids=batch).logits, unmerged.eval()(input_ids=batch).logits,
                                   atol=1e-4, rtol=1e-4)


# --- 3. SFT variants, one short run each ---------------------------------------------------------

SFT_VARIANTS = {
    "lora_8bit": (dict(use_lora=True, load_in_8bit=True), "lora_"),
    "dora": (dict(use_lora=True, use_dora=True), "lora_magnitude_vector"),
    "rslora": (dict(use_lora=True, use_rslora=True), "lora_"),
    "gradient_checkpointing": (dict(gradient_checkpointing=True), "layers."),
    "gradient_checkpointing_lora": (dict(gradient_checkpointing=True, use_lora=True), "lora_"),
    "gradient_checkpointing_qlora": (dict(gradient_checkpointing=True, use_qlora=True), "lora_"),
}


def count_training_forwards(model) -> dict:
    """Training-mode forward calls of the input embedding (once per micro batch) and of the MLP in
    the first decoder layer (twice with checkpointing: the forward, then its recomputation in the
    backward pass). Counted by wrapping ``forward``: the recomputation runs no module hooks."""
    calls = {"embedding": 0, "layer": 0}
    layer = next(m for m in model.modules() if type(m).__name__.endswith("DecoderLayer"))
    for name, module in (("embedding", model.get_input_embeddings()), ("layer", layer.mlp)):
        def counted(*args, _forward=module.forward, _module=module, _name=name, **kwargs):
            calls[_name] += _module.training
            return _forward(*args, **kwargs)

        module.forward = counted
    return calls


@pytest.mark.parametrize("name", list(SFT_VARIANTS))
def test_sft_variant_trains(name, tmp_path, monkeypatch):
    from minirec.sft import train as sft_module

    flags, must_move = SFT_VARIANTS[name]
    seen = {}
    wrap_model = sft_module.wrap_model

    def spy(model, *args, **kwargs):
        wrapped = wrap_model(model, *args, **kwargs)
        seen["model"] = wrapped
        seen["start"] = {n: p.detach().clone() for n, p in wrapped.named_parameters() if p.requires_grad}
        seen["calls"] = count_training_forwards(wrapped)
        return wrapped

    monkeypatch.setattr(sft_module, "wrap_model", spy)
    metrics = sft_train(SFTConfig(output_dir=str(tmp_path / name), eval_steps=2, select_by="loss",
                                  early_stopping_patience=0, logging_steps=1,
                                  **{**SFT, "max_steps": 2, "max_train_rows": 64}, **flags))
    finite_losses(metrics["log_history"])
    model, start = seen["model"], seen["start"]
    now = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    assert now.keys() == start.keys()
    changed = [n for n in start if must_move in n and not torch.equal(start[n], now[n].to(start[n].device))]
    assert changed, f"no trainable {must_move} tensor moved in {name}"
    if name == "lora_8bit":
        import bitsandbytes as bnb

        assert any(isinstance(m, bnb.nn.Linear8bitLt) for m in model.modules())
        assert json.loads((tmp_path / name / "run.json").read_text())["quantization"] == "8bit"
    if name == "dora":
        assert any("lora_magnitude_vector" in n for n in start)
    if name == "rslora":
        lora = next(m for m in model.modules() if isinstance(getattr(m, "scaling", None), dict) and m.scaling)
        cfg = model.peft_config["default"]
        assert lora.scaling["default"] == pytest.approx(cfg.lora_alpha / math.sqrt(cfg.r))
    if name.startswith("gradient_checkpointing"):  # on in every mode, and the backward really recomputes
        calls = seen["calls"]
        assert model.is_gradient_checkpointing and calls["embedding"] > 0, calls
        assert calls["layer"] == 2 * calls["embedding"], calls


# --- 4. RL variants, one step each ---------------------------------------------------------------

@pytest.fixture(scope="module")
def lora_sft(tmp_path_factory):
    out = tmp_path_factory.mktemp("rl_variants") / "lora"
    sft_train(SFTConfig(output_dir=str(out), use_lora=True, **SFT))
    return out


@pytest.fixture(scope="module")
def item_embeddings(tmp_path_factory, catalogue):
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(len(catalogue.sids), 16))
    path = tmp_path_factory.mktemp("emb") / "items.npy"
    save_item_embeddings(path, emb / np.linalg.norm(emb, axis=1, keepdims=True), list(catalogue.sids))
    return path


RL_VARIANTS = {
    "semantic": dict(reward_type="rule:1,semantic:0.5"),
    "gspo": dict(gspo=True),
    **{loss: dict(loss_type=loss) for loss in ("grpo", "dapo", "dr_grpo", "bnpo")},
}


@pytest.mark.parametrize("name", list(RL_VARIANTS))
def test_rl_variant_step_moves_the_adapter(name, lora_sft, item_embeddings, tmp_path, monkeypatch):
    from minirec.rl import trainer as rollout

    args = []
    trainer_class = rollout.SIDGRPOTrainer

    def recording_trainer(*a, **kw):  # records the GRPOConfig that rl.py actually hands to TRL
        args.append(kw["args"])
        return trainer_class(*a, **kw)

    monkeypatch.setattr(rollout, "SIDGRPOTrainer", recording_trainer)
    flags = dict(RL_VARIANTS[name])
    if name == "semantic":
        flags["item_embeddings"] = str(item_embeddings)
    out = tmp_path / name
    metrics = rl_train(RLConfig(model_path=str(lora_sft), use_lora=True, output_dir=str(out), keep_best=False,
                                add_target=True, **{**RL, "eval_rows": 2}, **flags))
    assert metrics["steps"] == 1
    finite_losses(metrics["log_history"])
    assert moved(adapter(lora_sft), adapter(out)), f"{name}: the adapter did not move"
    logs = {k for h in metrics["log_history"] for k in h}
    if name == "semantic":
        assert any("semantic" in k for k in logs), logs
    assert len(args) == 1 and args[0].loss_type == flags.get("loss_type", "grpo")
    assert args[0].importance_sampling_level == ("sequence" if name == "gspo" else "token")
    if name == "semantic":
        assert len(args[0].reward_weights) == 2 and sorted(args[0].reward_weights) == [0.5, 1.0]


# --- 1b. RL resume after a real SIGKILL ----------------------------------------------------------

RL_KILL_STEPS = 4


def rl_command(model_path, out):
    return [sys.executable, "rl.py", "--model_path", str(model_path), "--use_lora", "True", "--output_dir", str(out),
            "--max_prompts", "16", "--num_generations", "4", "--prompts_per_step", "2",
            "--max_steps", str(RL_KILL_STEPS), "--learning_rate", "1e-3", "--report_to", "none",
            "--save_steps", "1", "--logging_steps", "1",
            # what resume must carry besides TRL's state: the refill generator, the evaluations, the kept policy
            "--dynamic_sampling", "True", "--keep_best", "True", "--keep_margin", "0", "--eval_rows", "8",
            "--eval_steps", "2"]


def test_rl_resumes_after_sigkill_where_it_stopped(lora_sft, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TRANSFORMERS_VERBOSITY": "info", "TRL_EXPERIMENTAL_SILENCE": "1"}
    killed, reference = tmp_path / "killed", tmp_path / "reference"
    ckpt, state = kill_at_first_checkpoint(rl_command(lora_sft, killed), killed, env)
    k = state["global_step"]
    assert 0 < k < RL_KILL_STEPS and not (killed / "run.json").exists()

    resumed = subprocess.run(rl_command(lora_sft, killed) + ["--resume_from_checkpoint", "last"], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=600)
    output = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, output[-3000:]
    assert len(train_logs(output)) == RL_KILL_STEPS - k, train_logs(output)  # not a restart from step 0
    assert f"global step {k}" in output
    subprocess.run(rl_command(lora_sft, reference), cwd=ROOT, env=env, capture_output=True, check=True, timeout=600)
    logs = {}
    for name in ("killed", "reference"):
        metrics = json.loads((tmp_path / name / "metrics.json").read_text())
        assert metrics["steps"] == RL_KILL_STEPS
        logs[name] = {h["step"]: h for h in metrics["log_history"] if "loss" in h}
    assert sorted(logs["killed"]) == list(range(1, RL_KILL_STEPS + 1)) == sorted(logs["reference"])
    killed_m, reference_m = (json.loads((tmp_path / n / "metrics.json").read_text()) for n in ("killed", "reference"))
    assert killed_m["valid_by_step"] == reference_m["valid_by_step"]  # no re-evaluated start at the resumed step
    assert killed_m["kept_step"] == reference_m["kept_step"]
    refills = [h.get("frac_zero_std_before_refill") for h in logs["reference"].values()]
    assert any(refills), "no group needed a refill: the generator's state was never exercised"
    for s in range(k + 1, RL_KILL_STEPS + 1):
        got, want = logs["killed"][s], logs["reference"][s]
        assert got["learning_rate"] == pytest.approx(want["learning_rate"], rel=1e-6), s
        assert got["reward"] == pytest.approx(want["reward"], rel=1e-5), s
        assert got["loss"] == pytest.approx(want["loss"], rel=1e-4, abs=1e-6), s
    torch.testing.assert_close(adapter(killed), adapter(reference), rtol=1e-4, atol=1e-6)
