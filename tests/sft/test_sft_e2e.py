"""End-to-end SFT on the bundled data with a very small tiny model, every mode, on CPU."""

import json
import shutil

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
    assert metrics["greedy_next_sid_accuracy"]["rows"] == 8  # the accuracy itself: the test below
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


def test_greedy_accuracy_is_the_share_of_valid_rows_predicted_right(tmp_path):
    """The reported accuracy must count hits: the valid split here is 16 train rows, which 60
    full fine-tuning steps memorise, so it is high, and it equals HR@1 of a 1-beam evaluation
    (the other decoder) of the saved run. Guards against an accuracy that is always 0, or that
    compares predictions with anything but the row's target."""
    from minirec.evaluate import evaluate

    data = tmp_path / "data"
    shutil.copytree(INDUSTRIAL, data, ignore=shutil.ignore_patterns("user_sequences.json"))
    train_rows = (data / "train.inter").read_text().splitlines(keepends=True)
    (data / "valid.inter").write_text("".join(train_rows[:17]))  # the header line, then 16 rows
    out = tmp_path / "run"
    metrics = train(SFTConfig(output_dir=str(out), **{**SMALL, "data_dir": str(data), "max_train_rows": 16,
                                                      "max_valid_rows": 16, "greedy_eval_rows": 16,
                                                      "tasks": "next_sid"},
                              max_steps=60, learning_rate=3e-3, select_by="loss", early_stopping_patience=0,
                              eval_steps=60))
    greedy = metrics["greedy_next_sid_accuracy"]
    assert greedy["rows"] == 16 and greedy["accuracy"] >= 0.5, greedy
    m = evaluate(str(out), split="valid", num_beams=1, ks="1", output_dir=str(tmp_path / "eval"))
    assert m["rows"] == 16 and greedy["accuracy"] == pytest.approx(m["HR@1"]), (greedy, m["HR@1"])


def test_resume_from_last_checkpoint_continues_where_it_stopped(tmp_path, monkeypatch):
    """Resuming a 4-step run from its step-2 checkpoint trains steps 3 and 4 only (a restart from
    step 0 would also end at step 4, so the optimizer steps are counted)."""
    from minirec.sft.trainer import SIDTrainer

    out = tmp_path / "run"
    cfg = dict(output_dir=str(out), eval_steps=2, early_stopping_patience=0, **SMALL)
    train(SFTConfig(max_steps=2, **cfg))
    (out / "run.json").unlink()  # pretend the run was interrupted after its checkpoint
    micro_steps = []
    step = SIDTrainer.training_step
    monkeypatch.setattr(SIDTrainer, "training_step", lambda self, *a, **k: micro_steps.append(1) or step(self, *a, **k))
    metrics = train(SFTConfig(max_steps=4, resume_from_checkpoint="last", **cfg))
    accumulation = SMALL["batch_size"] // SMALL["micro_batch_size"]
    assert len(micro_steps) == 2 * accumulation, len(micro_steps)
    assert metrics["train"]["epoch"] > 0 and any(h.get("step") == 4 for h in metrics["log_history"])

