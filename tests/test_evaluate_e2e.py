"""Train a very small model for a few steps, then evaluate it end to end (and sharded)."""

import json
import os
import subprocess
import sys

import pytest

from minirec.evaluate import evaluate
from minirec.sft import SFTConfig
from minirec.sft.train import train
from tests.conftest import INDUSTRIAL, ROOT

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("eval") / "run"
    train(SFTConfig(output_dir=str(out), data_dir=str(INDUSTRIAL), tiny_hidden_size=64, tiny_num_layers=2,
                    max_train_rows=256, max_valid_rows=16, batch_size=16, micro_batch_size=16, max_steps=8,
                    learning_rate=3e-3, report_to="none", greedy_eval_rows=0, tasks="next_sid"))
    return out


def test_evaluate_writes_predictions_metrics_and_plot(trained_run, tmp_path):
    m = evaluate(str(trained_run), split="test", num_beams=10, batch_size=4, max_rows=12, output_dir=str(tmp_path))
    assert m["invalid_predictions"] == 0 and m["rows"] == 12
    assert set(m) >= {"HR@1", "HR@10", "NDCG@10", "MRR", "MRR@10", "coverage@10"} and "HR@20" not in m
    preds = [json.loads(line) for line in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    assert len(preds) == 12 and all(len(p["predictions"]) == 10 for p in preds)
    hr10 = sum(p["rank"] is not None and p["rank"] < 10 for p in preds) / 12
    assert m["HR@10"] == pytest.approx(hr10)
    assert (tmp_path / "metrics.png").stat().st_size > 1000


def test_max_history_changes_what_the_model_is_shown(trained_run, tmp_path):
    def scores(out, **kw):
        m = evaluate(str(trained_run), split="test", num_beams=5, batch_size=4, max_rows=12, output_dir=str(out), **kw)
        rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
        return m, rows

    m_run, full = scores(tmp_path / "run")
    m_one, one = scores(tmp_path / "one", max_history=1)
    assert m_run["max_history"] == 10 and m_one["max_history"] == 1
    longer = [i for i, r in enumerate(full) if len(r["history"]) > 1]
    assert longer and all(full[i]["scores"] != one[i]["scores"] for i in longer)
    assert all(full[i]["scores"] == one[i]["scores"] for i, r in enumerate(full) if len(r["history"]) == 1)


def test_sharded_evaluation_equals_single_process(trained_run, tmp_path):
    single = evaluate(str(trained_run), split="valid", num_beams=5, batch_size=4, max_rows=10,
                      output_dir=str(tmp_path / "one"))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "evaluate.py",
                           "--model_path", str(trained_run), "--split", "valid", "--num_beams", "5", "--batch_size", "4",
                           "--max_rows", "10", "--output_dir", str(tmp_path / "two")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    sharded = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert sharded["processes"] == 2
    for key in ("HR@1", "HR@5", "NDCG@5", "MRR", "coverage@10", "invalid_predictions", "rows"):
        assert sharded[key] == pytest.approx(single[key]), key
    one = (tmp_path / "one" / "predictions.jsonl").read_text().splitlines()
    two = (tmp_path / "two" / "predictions.jsonl").read_text().splitlines()
    assert [json.loads(x)["predictions"] for x in one] == [json.loads(x)["predictions"] for x in two]


def test_evaluate_rejects_a_dir_that_is_not_a_run(tmp_path):
    proc = subprocess.run([sys.executable, "evaluate.py", "--model_path", str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "no run.json" in proc.stderr.strip().splitlines()[-1]


def test_recommend_cli(trained_run):
    proc = subprocess.run([sys.executable, "-m", "minirec.recommend", "--model_path", str(trained_run),
                           "--history", "117,118", "--top_k", "3"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert [line.split()[0] for line in proc.stdout.splitlines()][:1] == ["1."]
    bad = subprocess.run([sys.executable, "-m", "minirec.recommend", "--model_path", str(trained_run),
                          "--history", "117,nope"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "unknown item" in bad.stderr.strip().splitlines()[-1]
