"""GRPO under DeepSpeed ZeRO-2 on two CPU ranks (gloo): the same step as one process.

``--prompts_per_step`` is global, so both runs roll out the same prompts in the same order, each
rank whole groups of G; the rewards of the first step (before any update) must then be equal,
and the checkpoint must have DeepSpeed's layout with one optimizer shard per rank.
"""

import json
import os
import subprocess
import sys

import pytest

from minirec.rl import RLConfig
from minirec.rl.train import train
from minirec.sft import SFTConfig
from minirec.sft.train import train as sft_train
from tests.conftest import INDUSTRIAL, ROOT

pytestmark = pytest.mark.slow

RL = dict(max_prompts=16, num_generations=4, prompts_per_step=4, max_steps=1, eval_rows=0, keep_best=False,
          add_target=True, learning_rate=1e-3, report_to="none", save_steps=1, logging_steps=1)
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "DS_BUILD_OPS": "0", "DS_ACCELERATOR": "cpu"}


def _flags(options):
    return [x for k, v in options.items() for x in (f"--{k}", str(v))]


def test_zero2_two_ranks_gives_the_rewards_of_one_process(tmp_path):
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
    first = [next(h for h in m["log_history"] if "reward" in h) for m in (one, two)]
    for key in ("reward", "reward_std", "frac_reward_zero_std"):
        assert first[0][key] == pytest.approx(first[1][key], abs=1e-6), key
    shards = sorted(p.name for p in (out / "checkpoint-1" / "global_step1").glob("*_optim_states.pt"))
    assert len(shards) == 2, shards
    assert (out / "adapter_model.safetensors").is_file() and json.loads((out / "run.json").read_text())["stage"] == "rl"
