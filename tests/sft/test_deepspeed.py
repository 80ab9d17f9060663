"""DeepSpeed ZeRO-2 passthrough: two CPU ranks under torchrun, through the bundled config."""

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import INDUSTRIAL, ROOT

pytestmark = pytest.mark.slow


def test_zero2_on_two_cpu_ranks(tmp_path):
    pytest.importorskip("deepspeed")
    out = tmp_path / "ds"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DS_BUILD_OPS": "0", "DS_ACCELERATOR": "cpu"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "sft.py",
         "--deepspeed", "configs/deepspeed/zero2.json", "--data_dir", str(INDUSTRIAL), "--output_dir", str(out),
         "--tiny_hidden_size", "64", "--tiny_num_layers", "2", "--max_train_rows", "64", "--max_valid_rows", "8",
         "--batch_size", "16", "--micro_batch_size", "8", "--max_steps", "2", "--report_to", "none",
         "--greedy_eval_rows", "0", "--tasks", "next_sid"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    run = json.loads((out / "run.json").read_text())
    assert run["config"]["deepspeed"] == "configs/deepspeed/zero2.json"
    assert (out / "model.safetensors").is_file()
