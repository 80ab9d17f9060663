"""A finished run stands alone: moved elsewhere and used from another directory, recommend, evaluate
--split test and merge work, recommend even with the dataset dir out of reach (the run carries its
catalogue), and --data_dir still overrides. The run is trained as the scripts train it, with the
dataset dir given relative to the checkout."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from minirec.sft import SFTConfig
from minirec.sft.train import train
from tests.conftest import INDUSTRIAL, ROOT

pytestmark = pytest.mark.slow


def command(argv, cwd):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    args = [str(ROOT / argv[0]), *argv[1:]] if argv[0].endswith(".py") else argv
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def ok(proc):
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_a_moved_run_works_from_another_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    trained = tmp_path / "out" / "sft_lora"
    train(SFTConfig(output_dir=str(trained), data_dir="data/Industrial_and_Scientific", use_lora=True,
                    tiny_hidden_size=64, tiny_num_layers=2, max_train_rows=64, max_valid_rows=8, batch_size=16,
                    micro_batch_size=16, max_steps=2, report_to="none", greedy_eval_rows=0, tasks="next_sid",
                    select_by="loss"))
    run = json.loads((trained / "run.json").read_text())
    assert run["data_dir"] == str(INDUSTRIAL)  # absolute, whatever the flag said
    assert (trained / "catalogue" / "index.json").read_bytes() == (INDUSTRIAL / "index.json").read_bytes()
    moved = tmp_path / "elsewhere" / "run"
    moved.parent.mkdir()
    shutil.move(trained, moved)
    cwd = tmp_path / "cwd"
    cwd.mkdir()

    history = ["--history", "117,118", "--top_k", "3"]
    lines = ok(command(["-m", "minirec.recommend", "--model_path", str(moved), *history], cwd)).splitlines()
    assert len(lines) >= 3 and lines[0].startswith("  1. <a_"), lines
    ok(command(["evaluate.py", "--model_path", str(moved), "--split", "test", "--num_beams", "5", "--max_rows", "8"],
               cwd))
    assert json.loads((moved / "eval_test" / "metrics.json").read_text())["rows"] == 8
    ok(command(["-m", "minirec.merge", "--model_path", str(moved), "--output_dir", "merged"], cwd))
    assert ok(command(["-m", "minirec.recommend", "--model_path", "merged", *history], cwd)).splitlines() == lines

    # the dataset dir out of reach: recommend needs only the run; evaluation needs the splits
    run["data_dir"] = str(tmp_path / "gone")
    (moved / "run.json").write_text(json.dumps(run))
    assert ok(command(["-m", "minirec.recommend", "--model_path", str(moved), *history], cwd)).splitlines() == lines
    evaluate = ["evaluate.py", "--model_path", str(moved), "--split", "test", "--num_beams", "5", "--max_rows", "8",
                "--output_dir", "eval"]
    gone = command(evaluate, cwd)
    assert gone.returncode == 2 and "gone: dataset directory not found" in gone.stderr, gone.stderr[-2000:]
    ok(command([*evaluate, "--data_dir", str(INDUSTRIAL)], cwd))


def test_an_rl_run_records_the_data_it_used_and_carries_the_sft_runs_catalogue(tmp_path):
    """rl.py --data_dir DIR: the RL run's run.json names DIR, not the SFT run's dataset dir, and its
    catalogue is the SFT run's own copy, so it is there even when that dataset dir is gone."""
    from minirec.rl import RLConfig
    from minirec.rl.train import train as rl_train

    first = tmp_path / "first"
    shutil.copytree(INDUSTRIAL, first, ignore=shutil.ignore_patterns("user_sequences.json", "item_embeddings*"))
    sft = tmp_path / "sft"
    train(SFTConfig(output_dir=str(sft), data_dir=str(first), tiny_hidden_size=64, tiny_num_layers=2,
                    max_train_rows=64, max_valid_rows=4, batch_size=16, micro_batch_size=16, max_steps=1,
                    report_to="none", greedy_eval_rows=0, tasks="next_sid", select_by="loss"))
    moved = tmp_path / "moved"
    first.rename(moved)  # the dataset dir the SFT run recorded is gone
    rl = tmp_path / "rl"
    rl_train(RLConfig(model_path=str(sft), data_dir=str(moved), output_dir=str(rl), max_prompts=8, num_generations=4,
                      prompts_per_step=2, max_steps=1, eval_rows=4, eval_steps=0, keep_best=False, add_target=True,
                      report_to="none", save_steps=1))
    run = json.loads((rl / "run.json").read_text())
    assert run["data_dir"] == str(moved.resolve()), run["data_dir"]
    for name in ("index.json", "item.json"):
        assert (rl / "catalogue" / name).read_bytes() == (sft / "catalogue" / name).read_bytes(), name
