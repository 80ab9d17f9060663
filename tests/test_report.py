"""The pipeline's report: beside each system, what it trained and on how many rows it was scored."""

import json

from minirec.report import report

METRICS = {"HR@1": 0.01, "HR@10": 0.0860, "NDCG@10": 0.05, "MRR": 0.04, "rows": 500, "num_beams": 50,
           "wall_seconds": 3.0}


def write(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def run_dir(path, stage, metrics):
    write(path / "run.json", {"base_model": "tiny", "base_model_path": ".", "mode": "full", "template": "sids",
                              "max_history": 10, "tasks": ["next_sid"], "data_dir": "d", "sid_index_sha256": "0",
                              "stage": stage})
    write(path / "metrics.json", metrics)
    write(path / "eval_test" / "metrics.json", METRICS)
    return path


def test_the_table_says_what_each_system_trained(tmp_path, capsys):
    sft = run_dir(tmp_path / "sft", "sft", {"train": {"epoch": 2.0}, "best_checkpoint": "out/sft/checkpoint-468",
                                            "eval_by_epoch": [{"epoch": 1.0, "step": 234}, {"epoch": 2.0, "step": 468}]})
    rl = run_dir(tmp_path / "rl", "rl", {"steps": 24, "kept_step": 12})
    write(tmp_path / "b" / "sasrec" / "metrics.json", {"train": {"epochs_run": 1, "best_epoch": 1}, "test": METRICS})
    write(tmp_path / "b" / "popularity" / "metrics.json", {"test": METRICS})
    report(runs=f"{sft},{rl}", names="minirec SFT,minirec SFT+RL", baselines=str(tmp_path / "b"),
           out=str(tmp_path / "report.md"))
    lines = (tmp_path / "report.md").read_text().splitlines()
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ")[1:3] for line in lines if line.startswith("| ")}
    assert rows["minirec SFT"] == ["SFT 2 epochs, kept epoch 2", "500"]
    assert rows["minirec SFT+RL"] == ["+24 GRPO steps, kept step 12", "500"]
    assert rows["sasrec"] == ["1 epoch, kept epoch 1", "500"]
    assert rows["popularity"] == ["counts on train", "500"]
    assert "| minirec SFT | SFT 2 epochs" in capsys.readouterr().out


def test_row_names_say_what_each_evaluation_recorded(tmp_path):
    """A row's label comes from its metrics.json (prior, teacher, weight), never from the command."""
    rl = run_dir(tmp_path / "rl", "rl", {"steps": 24, "kept_step": 0})
    write(rl / "eval_test_aided" / "metrics.json",
          {**METRICS, "split": "test", "model_path": str(rl), "repeat_prior": 0.25, "cf_weight": 1.5,
           "cf_model": {"path": "out/baselines/sasrec", "index_sha256": "0"}})
    write(rl / "eval_valid_x" / "metrics.json", {**METRICS, "split": "valid", "model_path": str(rl)})
    (tmp_path / "stages.tsv").write_text("SFT\t350\nRL\t120\n")
    report(runs=f"{rl},{rl / 'eval_test_aided'}", names="minirec SFT+RL,minirec SFT+RL",
           out=str(tmp_path / "report.md"), stages=str(tmp_path / "stages.tsv"))
    text = (tmp_path / "report.md").read_text()
    rows = [line.split(" | ")[0].strip("| ") for line in text.splitlines() if line.startswith("| minirec")]
    assert rows == ["minirec SFT+RL",
                    "minirec SFT+RL + CF-guided decoding (W 1.5) + re-purchase prior 0.25"]
    assert "| SFT | 350 |" in text and "| **total** | **470** |" in text
    import pytest

    from minirec.errors import MinirecError

    with pytest.raises(MinirecError, match="an evaluation of 'valid', not of --split test"):
        report(runs=str(rl / "eval_valid_x"), out=str(tmp_path / "r2.md"))
