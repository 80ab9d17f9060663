"""The CLI: each command writes metrics.json for valid and test; bad input is one line, exit 2."""

import json
import subprocess
import sys

import pytest

from minirec.baselines.commands import popularity, recent_popular, sasrec
from tests.conftest import ROOT


@pytest.mark.parametrize("command", [popularity, recent_popular])
def test_heuristics_write_valid_and_test(command, tiny_dir, tmp_path, capsys):
    report = command(data_dir=str(tiny_dir), output_dir=str(tmp_path / "out"))
    written = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert written == report and {"valid", "test"} <= set(written)
    assert {"HR@10", "NDCG@10", "MRR", "repeat_rows", "HR@10_repeat", "HR@10_new"} <= set(written["test"])
    assert "HR@K" in capsys.readouterr().out


def test_sasrec_reports_training_and_the_requested_split(tiny_dir, tmp_path):
    report = sasrec(data_dir=str(tiny_dir), output_dir=str(tmp_path / "out"), split="test", max_epochs=3,
                    hidden_size=16, num_heads=1, inner_size=32, num_layers=1, patience=1)
    written = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert "valid" not in written and "HR@10" in written["test"]
    train = written["train"]
    assert train["params"] > 0 and 1 <= train["best_epoch"] <= train["epochs_run"] <= 3
    assert len(train["valid_curve"]) == train["epochs_run"] and report["config"]["seed"] == 42


@pytest.mark.parametrize("args, message", [
    (["popularity", "--data_dir", "no/such/dir"], "dataset directory not found"),
    (["recent_popular", "--split", "train"], "choose from valid, test"),
    (["sasrec", "--num_heads", "3"], "not a multiple"),
])
def test_bad_input_is_one_line_and_exit_2(args, message, tiny_dir, tmp_path):
    out = tmp_path / "out"
    if "--data_dir" not in args:
        args = [*args, "--data_dir", str(tiny_dir)]
    proc = subprocess.run([sys.executable, "-m", "minirec.baselines", *args, "--output_dir", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and message in last and "Traceback" not in proc.stderr
    assert not out.exists()
