"""DeepSpeed passthrough: two CPU ranks under torchrun, and plain `python sft.py --deepspeed` as one rank."""

import json
import os
import subprocess
import sys

import pytest

from minirec.distributed import single_process_group
from tests.conftest import INDUSTRIAL, ROOT

TINY = ["--data_dir", str(INDUSTRIAL), "--tiny_hidden_size", "64", "--tiny_num_layers", "2", "--max_train_rows", "64",
        "--max_valid_rows", "8", "--batch_size", "16", "--micro_batch_size", "8", "--max_steps", "2", "--report_to",
        "none", "--greedy_eval_rows", "0", "--tasks", "next_sid", "--deepspeed", "configs/deepspeed/zero2.json"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "DS_BUILD_OPS": "0", "DS_ACCELERATOR": "cpu"}


def _losses(out):
    return [h["loss"] for h in json.loads((out / "metrics.json").read_text())["log_history"] if "loss" in h]


@pytest.mark.slow
def test_lora_zero2_on_two_cpu_ranks_runs_deepspeed(tmp_path):
    """Proof that DeepSpeed ran, not just exit 0: the Trainer held a DeepSpeedEngine, the checkpoint
    has DeepSpeed's layout with one ZeRO optimizer shard per rank, the loss fell, rank 0 saved once."""
    pytest.importorskip("deepspeed")
    out = tmp_path / "ds"
    lora = ["--use_lora", "True", "--learning_rate", "1e-2", "--max_train_rows", "16", "--micro_batch_size", "4",
            "--max_steps", "6", "--logging_steps", "1", "--eval_steps", "6", "--select_by", "loss"]
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "sft.py", *TINY,
         *lora, "--output_dir", str(out)],
        cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["engine"] == "DeepSpeedEngine" and metrics["processes"] == 2 and metrics["global_batch"] == 16
    assert "global batch 16 rows = micro 4 x accumulation 2 x 2 processes" in proc.stdout
    shards = sorted(p.name for p in (out / "checkpoint-6" / "global_step6").glob("*_optim_states.pt"))
    assert len(shards) == 2 and "rank_0" in shards[0] and "rank_1" in shards[1], shards
    losses = _losses(out)
    assert len(losses) == 6 and losses[-1] < losses[0] - 0.05, losses
    assert proc.stdout.count("saved the adapter to") == 1
    assert (out / "adapter_model.safetensors").is_file() and not (out / "model.safetensors").exists()
    assert json.loads((out / "run.json").read_text())["config"]["deepspeed"] == "configs/deepspeed/zero2.json"


@pytest.mark.slow
def test_accelerate_launch_with_a_shipped_config(tmp_path):
    """`accelerate launch --config_file configs/accelerate/zero2.yaml sft.py ...` (no --deepspeed flag):
    the DeepSpeed JSON comes through accelerate, and the Trainer runs under its engine."""
    pytest.importorskip("deepspeed")
    out = tmp_path / "acc"
    args = [a for a in TINY if a not in ("--deepspeed", "configs/deepspeed/zero2.json")]
    proc = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--config_file", "configs/accelerate/zero2.yaml",
         "--num_processes", "1", "sft.py", *args, "--max_steps", "1", "--select_by", "loss", "--output_dir", str(out)],
        cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert json.loads((out / "metrics.json").read_text())["engine"] == "DeepSpeedEngine"
    assert list((out / "checkpoint-1" / "global_step1").glob("*_optim_states.pt"))


@pytest.mark.slow
def test_deepspeed_without_a_launcher_runs_as_one_rank(tmp_path):
    """Without torchrun, DeepSpeed would fall back to MPI discovery and die on a missing mpi4py."""
    pytest.importorskip("deepspeed")
    env = {k: v for k, v in ENV.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    proc = subprocess.run([sys.executable, "sft.py", *TINY, "--max_steps", "1", "--output_dir", str(tmp_path / "one")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0 and "mpi4py" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-4000:]
    assert (tmp_path / "one" / "run.json").is_file()


def test_single_process_group_only_without_a_launcher(monkeypatch):
    # A private copy of the environment: what single_process_group writes must not outlive the test
    # (leaked RANK/WORLD_SIZE/MASTER_PORT make later trainings in this process, and their
    # subprocesses, set up a process group on a port that is then taken).
    launcher = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
    monkeypatch.setattr(os, "environ", {k: v for k, v in os.environ.items() if k not in launcher})
    assert single_process_group()
    assert (os.environ["RANK"], os.environ["WORLD_SIZE"], os.environ["LOCAL_RANK"]) == ("0", "1", "0")
    assert os.environ["MASTER_ADDR"] == "127.0.0.1" and int(os.environ["MASTER_PORT"]) > 0
    monkeypatch.setenv("WORLD_SIZE", "2")  # a launcher's settings are left alone
    monkeypatch.setenv("MASTER_PORT", "1234")
    assert not single_process_group() and os.environ["MASTER_PORT"] == "1234"


def test_deepspeed_initialises_one_rank_without_a_launcher():
    """What the Trainer does first with --deepspeed; without the env it would try MPI (mpi4py)."""
    pytest.importorskip("deepspeed")
    code = ("from minirec.distributed import single_process_group; single_process_group(); "
            "import deepspeed, torch.distributed as d; deepspeed.init_distributed(dist_backend='gloo'); "
            "print('rank', d.get_rank(), 'of', d.get_world_size())")
    env = {k: v for k, v in ENV.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "rank 0 of 1" in proc.stdout, proc.stderr[-3000:]
