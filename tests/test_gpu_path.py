"""What a GPU user's run depends on: run these first on a GPU machine.

    python -m pytest -q tests/test_gpu_path.py

Most tests here simulate a GPU with what the CPU can hold, and do the same on any machine (none
touches CUDA): bf16 support patched on while the model stays on the CPU, models loaded in fp32 as
on a CPU, a tiny Qwen2 whose embedding is padded past its tokenizer like Qwen2.5's, two gloo
processes for two GPUs, DeepSpeed's own config and optimizer code.

Only these exercise CUDA, and only where there is a CUDA GPU (skipped elsewhere). None has ever
run: no GPU was available when they were written.

- ``test_cuda_*``: one bf16 LoRA SFT step on the GPU, and RL's LM-head view through TRL's
  Triton log-probability kernel (the CPU runs its torch fallback).
- ``test_gpu_recipe_runs_end_to_end_*`` (slow): the recipe on one process, on the GPU under
  DeepSpeed's CUDA accelerator; on a machine without CUDA, on the CPU under DeepSpeed's CPU one.

configs/README.md says what has never run on a GPU.
"""

import json
import math

import pytest
import torch

from minirec.errors import MinirecError
from tests.conftest import ROOT

OFFLOAD = ROOT / "configs" / "deepspeed" / "zero2_offload.json"

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture
def fp32_loads(monkeypatch):
    """Models load in fp32 as on a CPU, also on a GPU machine (which would load them in bf16):
    a test that simulates on the CPU then computes the same there as here."""
    from minirec.modeling import loading

    monkeypatch.setattr(loading, "use_bf16", lambda: False)


# --- DeepSpeed configs ---------------------------------------------------------------------------

def test_deepspeed_keys_follow_the_installed_deepspeed(monkeypatch):
    """The known top-level keys are what DeepSpeed's own config class reads, not a copied list:
    a key a new release reads is accepted, a removed one refused with DeepSpeed's reason."""
    pytest.importorskip("deepspeed")
    from deepspeed.runtime.config import DeepSpeedConfig

    from minirec import deepspeed_config as dc

    known, removed = dc.deepspeed_keys()
    assert {"zero_optimization", "bf16", "optimizer", "tensor_parallel", "checkpoint"} <= known
    assert "load_universal_checkpoint" not in known  # DeepSpeed reads it inside "checkpoint"
    assert "progressive_layer_drop" in removed and "progressive_layer_drop" not in known

    read = DeepSpeedConfig._initialize_params

    def newer_release(self, param_dict):  # a DeepSpeed that reads one more key
        param_dict.get("brand_new_feature")
        return read(self, param_dict)

    monkeypatch.setattr(DeepSpeedConfig, "_initialize_params", newer_release)
    dc.deepspeed_keys.cache_clear()
    try:
        assert "brand_new_feature" in dc.deepspeed_keys()[0]
    finally:
        monkeypatch.undo()
        dc.deepspeed_keys.cache_clear()


@pytest.mark.parametrize("key, message", [
    ("zero_optimisation", "unknown key 'zero_optimisation' (DeepSpeed would ignore it); did you mean "
                          "'zero_optimization'?"),
    ("progressive_layer_drop", "'progressive_layer_drop': Progressive Layer Dropping has been removed"),
])
def test_a_key_deepspeed_does_not_read_is_one_line(tmp_path, key, message):
    pytest.importorskip("deepspeed")
    from minirec.deepspeed_config import check_deepspeed

    path = tmp_path / "ds.json"
    path.write_text(json.dumps({key: {}, "train_batch_size": "auto"}))
    with pytest.raises(MinirecError, match=message.replace("(", r"\(").replace(")", r"\)").replace("?", r"\?")):
        check_deepspeed(path)


def test_offload_keeps_the_embedding_rows_out_of_weight_decay(tmp_path, tiny_model):
    """zero2_offload.json has no optimizer section, so transformers builds minirec's AdamW groups
    (which accelerate hands to DeepSpeed's CPU Adam as they are) instead of one group of every
    weight; a config that has one is refused while --weight_decay > 0."""
    pytest.importorskip("deepspeed")
    from accelerate.utils import DummyOptim
    from transformers import TrainingArguments
    from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig, deepspeed_optim_sched

    from minirec.deepspeed_config import check_deepspeed
    from minirec.sft.trainer import SIDTrainer

    model, _, _ = tiny_model
    config = json.loads(OFFLOAD.read_text())
    args = TrainingArguments(output_dir=str(tmp_path), weight_decay=0.1, use_cpu=True, report_to=[])
    trainer = SIDTrainer(model=model, args=args)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer, _ = deepspeed_optim_sched(trainer, HfTrainerDeepSpeedConfig(config), args, 10, params)
    assert not isinstance(optimizer, DummyOptim), "DeepSpeed would build one group of every trainable weight"
    decay = {id(p): g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
    assert decay[id(model.get_input_embeddings().weight)] == 0.0
    assert 0.1 in decay.values()

    check_deepspeed(OFFLOAD, weight_decay=0.1)
    with_section = tmp_path / "with_optimizer.json"
    with_section.write_text(json.dumps({**config, "optimizer": {"type": "AdamW", "params": {"weight_decay": "auto"}}}))
    with pytest.raises(MinirecError, match="would decay the embedding and SID rows too"):
        check_deepspeed(with_section, weight_decay=0.1)
    check_deepspeed(with_section, weight_decay=0.0)  # nothing to exempt


@pytest.mark.parametrize("params, message", [
    ({"weight_decay": "0.1"}, "optimizer.params.weight_decay must be a number or \"auto\", not '0.1'"),
    ({"weight_decay": "none"}, "optimizer.params.weight_decay must be a number or \"auto\", not 'none'"),
    ({"weight_decay": True}, "optimizer.params.weight_decay must be a number or \"auto\", not True"),
    (["lr", 1e-4], "optimizer.params must be an object"),
], ids=["numeric-string", "word", "bool", "params-not-an-object"])
def test_an_optimizer_section_weight_decay_that_is_not_a_number_is_one_line(tmp_path, params, message):
    """DeepSpeed hands optimizer.params to the optimizer as they are: torch's AdamW would fail on a
    string weight decay (float <= str) once the model has loaded, and the decay check would skip it."""
    pytest.importorskip("deepspeed")
    from minirec.deepspeed_config import check_deepspeed

    path = tmp_path / "ds.json"
    path.write_text(json.dumps({"optimizer": {"type": "AdamW", "params": params}, "train_batch_size": "auto"}))
    for decay in (0.0, 0.1):
        with pytest.raises(MinirecError) as e:
            check_deepspeed(path, weight_decay=decay)
        assert str(e.value).startswith(f"--deepspeed {path}: {message}") and "\n" not in str(e.value)


# --- Qwen2.5's padded vocabulary -----------------------------------------------------------------

PADDING = 100  # rows past the tokenizer, as Qwen2.5-1.5B has 271 (151,936 rows for 151,665 tokens)


def _padded_qwen(path, tied):
    """A tiny Qwen2 checkpoint whose matrices have PADDING never-trained rows past its tokenizer
    (set far from every trained row, so a SID row left on one shows)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from minirec.modeling.tiny import train_tokenizer

    tok = train_tokenizer(["the quick brown fox jumps over the lazy dog"] * 20, 300)
    config = Qwen2Config(vocab_size=len(tok) + PADDING, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=tied,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config)
    with torch.no_grad():
        model.get_input_embeddings().weight[len(tok):] = 5.0
        model.lm_head.weight[len(tok):] = 5.0
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path, len(tok)


@pytest.mark.parametrize("tied", [True, False], ids=["tied-like-1.5B", "untied-like-7B"])
@pytest.mark.parametrize("n_sids", [40, 200], ids=["fewer-sids-than-padding", "more"])
def test_every_sid_row_starts_at_the_mean_whatever_the_padding(fp32_loads, tmp_path, catalogue, tied, n_sids):
    from transformers import AutoModelForCausalLM

    from minirec.modeling.loading import add_sid_tokens, load_base

    path, n_tokens = _padded_qwen(tmp_path / "base", tied)
    model, tok = load_base(path)
    ids = add_sid_tokens(model, tok, catalogue.sid_tokens()[:n_sids])
    rows = n_tokens + max(PADDING, n_sids)  # the padding is kept, never cut
    assert model.config.vocab_size == rows
    for w in (model.get_input_embeddings().weight, model.lm_head.weight):
        assert w.shape[0] == rows
        mean = w[:n_tokens].mean(0)
        torch.testing.assert_close(w[ids], mean.expand(n_sids, -1), atol=1e-4, rtol=0)
    model.save_pretrained(tmp_path / "saved")  # its checkpoint loads back whole
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "saved")
    torch.testing.assert_close(again.lm_head.weight, model.lm_head.weight)


# --- mixed precision: fp32 master weights under bf16 ---------------------------------------------

@pytest.fixture
def bf16_gpu(monkeypatch):
    """What minirec sees on a bf16 GPU (loads go to bf16); the model itself stays on the CPU."""
    import minirec.sft.train  # noqa: F401 - imported first: transformers' Trainer probes CUDA on import

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)


def _sft_trainer(tiny_base, catalogue, out, **flags):
    """SFT's model as its Trainer holds it before training (on the CPU: the device is not patched)."""
    from transformers import TrainingArguments

    from minirec.sft.config import SFTConfig
    from minirec.sft.train import build_trainer, load_for_training

    config = SFTConfig(tiny_hidden_size=64, tiny_num_layers=2, **flags)
    model, _ = load_for_training(config, tiny_base, catalogue)
    return build_trainer(config, model, TrainingArguments(output_dir=str(out), use_cpu=True, report_to=[]))


def _sft_model(tiny_base, catalogue, out, **flags):
    return _sft_trainer(tiny_base, catalogue, out, **flags).model


def _moved_by_one_adamw_step(model, lr=1e-6) -> float:
    """One AdamW step under bf16 autocast (what the Trainer's bf16=True runs): the fraction of the
    trainable values with a gradient that the step changed."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in trainable]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(input_ids=torch.tensor([[5, 6, 7, 8, 9]]), labels=torch.tensor([[5, 6, 7, 8, 9]])).loss
    loss.backward()
    torch.optim.AdamW(trainable, lr=lr, weight_decay=0.0).step()
    moved = [((p.detach() != b) & (p.grad != 0)).sum() for p, b in zip(trainable, before) if p.grad is not None]
    graded = [(p.grad != 0).sum() for p in trainable if p.grad is not None]
    return float(sum(moved) / sum(graded))


def test_full_fine_tuning_trains_fp32_master_weights(tiny_base, catalogue, bf16_gpu, tmp_path):
    """A bf16 weight drops a 1e-6 update (its spacing is ~1/256 of its size); an fp32 one keeps it."""
    model = _sft_model(tiny_base, catalogue, tmp_path)
    assert {p.dtype for p in model.parameters() if p.requires_grad} == {torch.float32}
    assert _moved_by_one_adamw_step(model) > 0.99


def test_lora_keeps_its_frozen_base_in_bf16(tiny_base, catalogue, bf16_gpu, tmp_path):
    model = _sft_model(tiny_base, catalogue, tmp_path, use_lora=True)
    frozen = {p.dtype for n, p in model.named_parameters() if not p.requires_grad and "layers" in n}
    assert frozen == {torch.bfloat16}  # the base's memory is what bf16 saves
    assert {p.dtype for p in model.parameters() if p.requires_grad} == {torch.float32}  # LoRA and SID rows


def test_deepspeed_keeps_its_own_fp32_copy(tiny_base, catalogue, bf16_gpu, tmp_path):
    """Under DeepSpeed the model stays bf16: its bf16 optimizer holds the fp32 master weights."""
    model = _sft_model(tiny_base, catalogue, tmp_path, deepspeed=str(ROOT / "configs" / "deepspeed" / "zero2.json"))
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}


def test_full_fine_tuning_casts_to_fp32_after_the_trainer_placed_the_model(tiny_base, catalogue, bf16_gpu, tmp_path,
                                                                          monkeypatch):
    """The fp32 copy is made where the model trains (its GPU), never in host RAM first: 28 GB per
    rank for a 7B model. The Trainer moves the bf16 model, then the weights are cast, and only
    train() builds the optimizer, so the optimizer holds the fp32 weights."""
    from transformers import Trainer

    moved = []
    move = Trainer._move_model_to_device

    def recording(self, model, device):
        moved.append({p.dtype for p in model.parameters() if p.requires_grad})
        return move(self, model, device)

    monkeypatch.setattr(Trainer, "_move_model_to_device", recording)
    trainer = _sft_trainer(tiny_base, catalogue, tmp_path)
    assert moved == [{torch.bfloat16}], "the trainable weights were cast before the model reached its device"
    assert {p.dtype for p in trainer.model.parameters() if p.requires_grad} == {torch.float32}
    assert trainer.optimizer is None
    trainer.create_optimizer()  # what train() does first
    assert {p.dtype for g in trainer.optimizer.param_groups for p in g["params"]} == {torch.float32}


@needs_cuda
def test_cuda_lora_sft_step_in_bf16(tmp_path, industrial):
    """One LoRA SFT step on the GPU as sft.py runs it, on a tiny Qwen2 padded like Qwen2.5: the
    base loads in bf16 and stays so, the Trainer puts the model on the GPU, the adapters and SID
    rows train in fp32 under bf16 autocast, and the loss is finite."""
    if not torch.cuda.is_bf16_supported():
        pytest.skip("needs a GPU with bf16")
    from transformers import TrainingArguments

    from minirec.prompts import build_examples
    from minirec.sft.config import SFTConfig
    from minirec.sft.train import _dataset, build_trainer, load_for_training
    from minirec.tokenization import CompletionCollator, encode_examples

    base, _ = _padded_qwen(tmp_path / "qwen", tied=True)
    config = SFTConfig(base_model=str(base), use_lora=True, lora_r=4, lora_alpha=8)
    model, tok = load_for_training(config, base, industrial.catalogue)
    rows = build_examples(industrial.split("train")[:8], industrial.catalogue, ("next_sid",))
    args = TrainingArguments(output_dir=str(tmp_path / "run"), bf16=True, max_steps=1, per_device_train_batch_size=8,
                             learning_rate=1e-3, save_strategy="no", report_to=[], remove_unused_columns=False)
    trainer = build_trainer(config, model, args, train_dataset=_dataset(encode_examples(tok, rows, 128)),
                            data_collator=CompletionCollator(tok.pad_token_id))
    named = dict(trainer.model.named_parameters())
    trainable = {n: p for n, p in named.items() if p.requires_grad}
    assert {p.device.type for p in named.values()} == {"cuda"}
    assert {p.dtype for p in trainable.values()} == {torch.float32}  # LoRA and the SID rows
    assert {p.dtype for n, p in named.items() if not p.requires_grad and "layers" in n} == {torch.bfloat16}
    assert any("lora_" in n for n in trainable) and any("trainable_tokens" in n for n in trainable)
    before = {n: p.detach().clone() for n, p in trainable.items()}
    loss = trainer.train().training_loss
    assert math.isfinite(loss) and loss > 0
    assert all(torch.isfinite(p).all() for p in trainable.values())
    assert any(not torch.equal(p, before[n]) for n, p in trainable.items())
    assert {p.dtype for p in trainable.values()} == {torch.float32}


# --- the LM-head view TRL's fused log-probs read -------------------------------------------------

def _policy(tied, tiny_base, catalogue, tmp_path, device=None):
    """A LoRA policy as RL holds it: fused LM head, trainable SID rows moved off their start, the
    adapted-head view exposed. Tied like Qwen2.5-1.5B (the tiny base) or untied like 7B. With a
    ``device``, on it as RL's Trainer puts it, trainable weights then cast to fp32."""
    from trl.trainer.utils import add_fused_lm_head

    from minirec.modeling.adapters import upcast_trainable, wrap_model
    from minirec.modeling.loading import add_sid_tokens, load_base
    from minirec.rl.lm_head import expose_adapted_lm_head

    path = tiny_base if tied else _padded_qwen(tmp_path / "untied", tied=False)[0]
    model, tok = load_base(path)
    ids = add_sid_tokens(model, tok, catalogue.sid_tokens()[:64])
    add_fused_lm_head(model, outputs=("log_probs",))
    model = wrap_model(model, "lora", ids, lora_r=4)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "trainable_tokens_delta" in n:
                p.add_(torch.randn_like(p))
    if device is not None:
        model.to(device)
        upcast_trainable(model, under_deepspeed=False)
    expose_adapted_lm_head(model)
    return model, ids


@pytest.fixture(params=["tied", "untied"])
def policy(request, fp32_loads, tiny_base, catalogue, tmp_path):
    return _policy(request.param == "tied", tiny_base, catalogue, tmp_path)


def test_reading_the_head_copies_no_vocab_by_hidden_matrix(policy):
    """TRL reads ``weight`` three times per forward; a merged copy on each read is 1.1 GB for
    Qwen2.5-7B's head. After the first read (which builds its buffer) no read allocates one."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_leaves

    model, _ = policy
    view = model.get_base_model().get_output_embeddings()
    first = view.weight
    full = first.numel()

    class NewFullSizeStorages(TorchDispatchMode):
        seen = set()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            self.seen |= {t.untyped_storage().data_ptr() for t in tree_leaves(out)
                          if isinstance(t, torch.Tensor) and t.numel() >= full}
            return out

    with NewFullSizeStorages() as mode:
        reads = [view.weight for _ in range(3)]
    buffer = first.untyped_storage().data_ptr()
    assert mode.seen <= {buffer} and {w.untyped_storage().data_ptr() for w in reads} == {buffer}
    with model.disable_adapter():
        assert view.weight is view._layer[0].base_layer.weight  # the KL reference reads the base, as it is


def _fused_and_plain_sid_row_grads(model, ids, autocast=None):
    """(gradient of the SID rows through TRL's fused log-probs, through PEFT's own forward: the
    reference, (rows, view, head)) for the same loss on the same tokens."""
    from contextlib import nullcontext

    view = model.get_base_model().get_output_embeddings()
    head, delta = view._layer[0], view._layer[0].trainable_tokens_delta["default"]  # the head's own rows
    x = torch.tensor([[5, 6, ids[0], ids[9], ids[33]]], device=delta.device)
    labels = x.clone()
    labels[:, :2] = -100
    with autocast or nullcontext():
        loss = model(input_ids=x, labels=labels).loss
    loss.backward()
    plain, delta.grad = delta.grad.clone(), None
    with autocast or nullcontext():
        log_probs = model(input_ids=x, labels=labels, fused_lm_head=True).log_probs[:, 1:]
    (-log_probs.sum() / 3).backward()
    return delta.grad, plain, (delta, view, head)


def _step_shows_in_the_next_read(delta, view, head):
    with torch.no_grad():
        delta.sub_(0.1 * delta.grad)
    torch.testing.assert_close(view.weight[head.token_indices["default"]], delta.to(view.weight.dtype))


def test_fused_log_probs_train_the_sid_rows(policy):
    """The fused path's gradient on the SID rows equals the plain forward's, and a step on them
    shows in the next read."""
    fused, plain, rows = _fused_and_plain_sid_row_grads(*policy)
    torch.testing.assert_close(fused, plain)
    assert fused.abs().sum() > 0
    _step_shows_in_the_next_read(*rows)


@needs_cuda
@pytest.mark.parametrize("tied", [True, False], ids=["tied-like-1.5B", "untied-like-7B"])
def test_cuda_fused_log_probs_train_the_sid_rows(tiny_base, catalogue, tmp_path, tied):
    """As RL runs it on a GPU: bf16 base, fp32 SID rows and LoRA, bf16 autocast, TRL's Triton
    kernel. The SID rows' gradient is the plain forward's up to bf16 rounding (the plain path
    rounds its logits to bf16, the kernel accumulates in fp32), and a step shows in the next read."""
    model, ids = _policy(tied, tiny_base, catalogue, tmp_path, device="cuda")
    delta = model.get_base_model().get_output_embeddings()._layer[0].trainable_tokens_delta["default"]
    assert delta.is_cuda and delta.dtype == torch.float32
    fused, plain, rows = _fused_and_plain_sid_row_grads(model, ids, torch.autocast("cuda", dtype=torch.bfloat16))
    assert fused.dtype == torch.float32 and torch.isfinite(fused).all() and plain.norm() > 0
    assert ((fused - plain).norm() / plain.norm()).item() < 3e-2
    _step_shows_in_the_next_read(*rows)


# --- SFT's selection search on two processes ------------------------------------------------------

def _selection_worker(rank, world, port, base, out):
    """One of ``world`` gloo processes running SFT's selection search; writes what it decoded."""
    import os

    import torch.distributed as dist

    import minirec.decoding
    import minirec.modeling.loading
    from minirec.data import load_dataset
    from minirec.modeling.loading import add_sid_tokens, load_base
    from minirec.sft.config import SFTConfig
    from minirec.sft.train import _rank_fn
    from tests.conftest import INDUSTRIAL

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    minirec.modeling.loading.use_bf16 = lambda: False  # fp32 as on a CPU, like the test's own model
    dist.init_process_group("gloo", rank=rank, world_size=world)
    decoded, real = [], minirec.decoding.rank_sids
    minirec.decoding.rank_sids = lambda m, t, c, histories, *a, **k: decoded.extend(histories) or real(
        m, t, c, histories, *a, **k)
    data = load_dataset(INDUSTRIAL, splits=("valid",))
    model, tok = load_base(base)
    add_sid_tokens(model, tok, data.catalogue.sid_tokens())
    ranks = _rank_fn(SFTConfig(select_rows=24, select_beams=10), tok, data.catalogue, data.split("valid"))(model)
    (out / f"rank{rank}.json").write_text(json.dumps({"decoded": len(decoded), "ranks": ranks}))
    dist.destroy_process_group()


@pytest.mark.slow
def test_selection_search_splits_its_rows_across_processes(fp32_loads, tiny_model, tiny_base, industrial, tmp_path):
    """Each of 2 processes decodes half the rows, and both get every row's rank, the same as one
    process alone: 8 GPUs search 8x faster, not 8 times."""
    import socket

    from minirec.sft.config import SFTConfig
    from minirec.sft.train import _rank_fn

    model, tok, _ = tiny_model
    alone = _rank_fn(SFTConfig(select_rows=24, select_beams=10), tok, industrial.catalogue,
                     industrial.split("valid"))(model)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torch.multiprocessing.spawn(_selection_worker, args=(2, port, tiny_base, tmp_path), nprocs=2)
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["decoded"] for r in results] == [12, 12]
    assert results[0]["ranks"] == results[1]["ranks"] == alone and len(alone) == 24


# --- the GPU recipe (scripts/gpu/) ----------------------------------------------------------------

RECIPE = ROOT / "scripts" / "gpu" / "qwen2.5-1.5b_lora.sh"


def _recipe(tmp_path, *settings, python=None, env=None):
    import os
    import subprocess

    if python is None:  # a stand-in interpreter that prints the command it was given
        python = tmp_path / "python"
        python.write_text('#!/bin/sh\necho "$@"\n')
        python.chmod(0o755)
    return subprocess.run(["bash", str(RECIPE), *settings], cwd=ROOT, text=True, capture_output=True, timeout=900,
                          env={**os.environ, **(env or {}), "PYTHON": str(python)})


def test_gpu_recipe_runs_the_commands_its_readme_shows(tmp_path):
    """8 processes, LoRA, ZeRO-2, the paper's RL settings; the README's command block is exactly
    what the script runs."""
    out = _recipe(tmp_path, "BASE_MODEL=/models/Qwen2.5-1.5B")
    assert out.returncode == 0, out.stderr
    commands = out.stdout.strip().splitlines()
    readme = (ROOT / "scripts" / "gpu" / "README.md").read_text()
    assert [c for c in readme.splitlines() if c.startswith("-m torch.distributed.run")] == commands
    assert all(c.startswith("-m torch.distributed.run --standalone --nproc_per_node 8 ") for c in commands)
    sft, _, rl, _ = commands
    assert "--use_lora True" in sft and "--deepspeed configs/deepspeed/zero2.json" in sft
    for flag in ("--use_lora True", "--num_generations 16", "--num_epochs 2", "--learning_rate 1e-5", "--beta 1e-3",
                 "--deepspeed configs/deepspeed/zero2.json"):
        assert flag in rl, flag
    assert "--beam_search False" not in rl  # rollouts by constrained beam search, the default
    missing = _recipe(tmp_path)
    assert missing.returncode == 2 and missing.stderr.startswith("error: BASE_MODEL=")


@pytest.mark.slow
def test_gpu_recipe_runs_end_to_end_with_a_padded_tiny_qwen(tmp_path):
    """Every stage of the recipe, on one process with a tiny Qwen2 padded like Qwen2.5 and a few
    rows: its flags parse, its models load, its runs and evaluations are written. On the GPU when
    there is one, else on the CPU (DeepSpeed's CPU accelerator, set only then)."""
    import sys

    base, _ = _padded_qwen(tmp_path / "qwen", tied=True)
    env = {"OMP_NUM_THREADS": "1", "DS_BUILD_OPS": "0"}
    if not torch.cuda.is_available():  # on a GPU, DeepSpeed's engine and the Trainer's batches both go to it
        env["DS_ACCELERATOR"] = "cpu"
    out = tmp_path / "runs"
    small = {"SFT_FLAGS": "--max_train_rows 32 --max_valid_rows 16 --select_rows 8 --greedy_eval_rows 4 "
                          "--max_steps 1 --batch_size 8 --micro_batch_size 8 --report_to none",
             "RL_FLAGS": "--max_steps 1 --max_prompts 8 --prompts_per_step 2 --num_generations 4 "
                         "--micro_batch_size 8 --eval_rows 8 --report_to none",
             "EVAL_FLAGS": "--max_rows 8"}
    proc = _recipe(tmp_path, f"BASE_MODEL={base}", "NPROC=1", f"OUT={out}", *(f"{k}={v}" for k, v in small.items()),
                   python=sys.executable, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    for stage in ("sft", "rl"):
        assert (out / stage / "run.json").is_file() and (out / stage / "eval_test" / "metrics.json").is_file()
        assert json.loads((out / stage / "run.json").read_text())["config"]["deepspeed"] == \
            "configs/deepspeed/zero2.json"
    for line in ("global batch 8 rows", "saved the adapter to", "global batch 8 completions", "wrote "):
        assert line in proc.stdout, line
