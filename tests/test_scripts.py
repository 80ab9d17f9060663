"""The shell scripts assemble the flags their names promise (checked with a stand-in interpreter)."""

import os
import subprocess

import pytest

from tests.conftest import ROOT


@pytest.mark.parametrize("script, expected, absent", [
    ("sft_lora.sh", ["--use_lora True", "--output_dir out/sft_lora"], ["--use_qlora"]),
    ("sft_qlora.sh", ["--use_qlora True", "--lora_r 16", "--output_dir out/sft_qlora"], ["--use_lora"]),
    ("sft_full.sh", ["--num_epochs 8", "--learning_rate 1.5e-3", "--dense True", "--template sids"], ["--use_lora", "--use_qlora"]),
    ("rl_lora.sh", ["--use_lora True", "--model_path out/sft_lora"], ["--use_qlora"]),
    ("rl_qlora.sh", ["--use_qlora True", "--model_path out/sft_qlora"], ["--use_lora"]),
    ("rl_full.sh", ["--model_path out/sft_full", "--learning_rate 2e-5"], ["--use_lora", "--use_qlora"]),
])
def test_script_flags(tmp_path, script, expected, absent):
    fake = tmp_path / "python"
    fake.write_text('#!/bin/sh\necho "$@"\n')
    fake.chmod(0o755)
    out = subprocess.run(["bash", f"scripts/{script}", "SEED=7", "--max_steps", "1"], cwd=ROOT, text=True,
                         capture_output=True, env={**os.environ, "PYTHON": str(fake)}, timeout=60)
    assert out.returncode == 0, out.stderr
    line = " ".join(out.stdout.split())
    assert all(e in line for e in expected) and not any(a in line for a in absent), line
    assert "--seed 7" in line and line.endswith("--max_steps 1")
