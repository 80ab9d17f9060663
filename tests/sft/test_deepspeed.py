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


@pytest.mark.slow
def test_zero2_on_two_cpu_ranks(tmp_path):
    pytest.importorskip("deepspeed")
    out = tmp_path / "ds"
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "sft.py", *TINY,
         "--output_dir", str(out)],
        cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    run = json.loads((out / "run.json").read_text())
    assert run["config"]["deepspeed"] == "configs/deepspeed/zero2.json"
    assert (out / "model.safetensors").is_file()


@pytest.mark.slow
def test_deepspeed_without_a_launcher_runs_as_one_rank(tmp_path):
    """Without torchrun, DeepSpeed would fall back to MPI discovery and die on a missing mpi4py."""
    pytest.importorskip("deepspeed")
    env = {k: v for k, v in ENV.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    proc = subprocess.run([sys.executable, "sft.py", *TINY, "--max_steps", "1", "--output_dir", str(tmp_path / "one")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0 and "mpi4py" not in proc.stderr, proc.stderr[-4000:]
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
