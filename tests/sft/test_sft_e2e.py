"""End-to-end SFT on the bundled data with a very small tiny model, every mode, on CPU."""

import json

import pytest
import torch

from minirec.modeling.loading import load_trained
from minirec.sft import SFTConfig
from minirec.sft.train import train
from tests.conftest import INDUSTRIAL

pytestmark = pytest.mark.slow

SMALL = dict(
    data_dir=str(INDUSTRIAL), tiny_hidden_size=64, tiny_num_layers=2, max_train_rows=64, max_valid_rows=16,
    batch_size=16, micro_batch_size=8, report_to="none", greedy_eval_rows=8, tasks="next_sid,sid_to_title",
)


@pytest.mark.parametrize("flags", [{"use_lora": True}, {"use_qlora": True}, {}, {"freeze_llm": True}],
                         ids=["lora", "qlora", "full", "freeze"])
def test_each_mode_trains_and_saves_a_loadable_run(tmp_path, flags, capsys):
    out = tmp_path / "run"
    metrics = train(SFTConfig(output_dir=str(out), max_steps=3, **SMALL, **flags))
    assert "trainable params: " in capsys.readouterr().out
    run = json.loads((out / "run.json").read_text())
    assert run["mode"] == {"use_lora": "lora", "use_qlora": "qlora", "freeze_llm": "freeze"}.get(next(iter(flags), ""), "full")
    weights = "adapter_model.safetensors" if flags else "model.safetensors"
    assert (out / weights).is_file() and (out / "training.png").stat().st_size > 1000
    assert 0.0 <= metrics["greedy_next_sid_accuracy"]["accuracy"] <= 1.0
    assert metrics["tokens_per_second"] > 0
    assert any(h.get("tokens_per_second", 0) > 0 for h in metrics["log_history"] if "loss" in h)
    model, tok, info = load_trained(out)
    assert info.quantization == ("4bit" if flags.get("use_qlora") else None)
    assert model(input_ids=torch.tensor([[tok.convert_tokens_to_ids("<a_1>")]])).logits.shape[-1] >= len(tok)


def test_full_fine_tuning_learns(tmp_path):
    """Valid loss on next-SID must fall well below its starting value within 40 steps."""
    cfg = SFTConfig(output_dir=str(tmp_path / "run"), max_steps=40, eval_steps=20, learning_rate=3e-3,
                    early_stopping_patience=0, **{**SMALL, "max_train_rows": 1000, "max_valid_rows": 64})
    metrics = train(cfg)
    losses = [h["loss"] for h in metrics["log_history"] if "loss" in h]
    evals = [e["eval_loss"] for e in metrics["eval_by_epoch"]]
    assert losses[-1] < losses[0] - 1.0, losses  # nats per token, from ~ln(vocab) at random init
    assert evals[-1] < evals[0], evals


def test_resume_from_last_checkpoint(tmp_path):
    out = tmp_path / "run"
    cfg = dict(output_dir=str(out), eval_steps=2, early_stopping_patience=0, **SMALL)
    train(SFTConfig(max_steps=2, **cfg))
    (out / "run.json").unlink()  # pretend the run was interrupted after its checkpoint
    metrics = train(SFTConfig(max_steps=4, resume_from_checkpoint="last", **cfg))
    assert metrics["train"]["epoch"] > 0 and any(h.get("step") == 4 for h in metrics["log_history"])

