"""GRPO under DeepSpeed ZeRO-2 on two CPU ranks (gloo): the same training as one process.

``--prompts_per_step`` is global, so both runs roll out the same prompts in the same order, each
rank whole groups of G. After two steps the adapters must then be equal: the second step's
rollouts come from the first update, and each update from gradients ZeRO-2 reduced across the
ranks, so a wrong gradient reduction, learning rate or batch split shows in the weights (the
first step's rewards, computed before any gradient, would not). The checkpoint must have
DeepSpeed's layout with one optimizer shard per rank.
"""

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from minirec.rl import RLConfig
from minirec.rl.train import train
from minirec.sft import SFTConfig
from minirec.sft.train import train as sft_train
from tests.conftest import INDUSTRIAL, ROOT

pytestmark = pytest.mark.slow

RL = dict(max_prompts=16, num_generations=4, prompts_per_step=4, max_steps=2, eval_rows=2, keep_best=False,
          add_target=True, learning_rate=1e-3, report_to="none", save_steps=2, logging_steps=1)
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "DS_BUILD_OPS": "0", "DS_ACCELERATOR": "cpu"}


def _flags(options):
    return [x for k, v in options.items() for x in (f"--{k}", str(v))]


def test_zero2_two_ranks_train_the_weights_of_one_process(tmp_path):
    pytest.importorskip("deepspeed")
    sft = tmp_path / "sft"
    sft_train(SFTConfig(output_dir=str(sft), use_lora=True, data_dir=str(INDUSTRIAL), tiny_hidden_size=64,
                        tiny_num_layers=2, max_train_rows=64, max_valid_rows=8, batch_size=16, micro_batch_size=16,
                        max_steps=2, report_to="none", greedy_eval_rows=0, tasks="next_sid", select_by="loss"))
    one = train(RLConfig(model_path=str(sft), use_lora=True, output_dir=str(tmp_path / "one"), **RL))
    out = tmp_path / "two"
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "rl.py",
         "--model_path", str(sft), "--use_lora", "True", "--output_dir", str(out),
         "--deepspeed", "configs/deepspeed/zero2.json", *_flags(RL)],
        cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "global batch 16 completions = micro 8 x accumulation 1 x 2 processes" in proc.stdout
    two = json.loads((out / "metrics.json").read_text())
    assert one["steps"] == two["steps"] == 2
    start, single, sharded = (load_file(str(p / "adapter_model.safetensors")) for p in (sft, tmp_path / "one", out))
    assert start.keys() == single.keys() == sharded.keys()
    update = max((single[k] - start[k]).abs().max().item() for k in start)
    assert update > 1e-4, f"the reference run barely trained ({update})"  # far above the tolerance below
    for k in single:  # Adam divides by tiny second moments, so summation order shows at ~1e-6
        torch.testing.assert_close(sharded[k], single[k], rtol=1e-3, atol=1e-5, msg=lambda m, k=k: f"{k}: {m}")
    shards = sorted(p.name for p in (out / "checkpoint-2" / "global_step2").glob("*_optim_states.pt"))
    assert len(shards) == 2, shards
    assert (out / "adapter_model.safetensors").is_file() and json.loads((out / "run.json").read_text())["stage"] == "rl"
