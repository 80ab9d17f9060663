"""User-facing entry points: bad input -> one line on stderr, exit code 2, no output dir."""

import subprocess
import sys

import pytest

from tests.conftest import INDUSTRIAL, ROOT


def run_sft(*args):
    return subprocess.run([sys.executable, "sft.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--data_dir", "no/such/dir"], "dataset directory not found"),
        (["--use_lora", "True", "--use_qlora", "True"], "exclude each other"),
        (["--tasks", "next_sid,bogus"], "unknown task 'bogus'"),
        (["--base_model", "/no/such/model"], "nothing is downloaded"),
        (["--batch_size", "100", "--micro_batch_size", "32"], "not a multiple"),
        (["--bogus_flag", "1"], "unknown flag(s) --bogus_flag"),
        (["--use_lora", "True", "--lora_target_modules", "q_proj,attn_fc"], "no Linear layer named attn_fc"),
        (["--deepspeed", "nope.json"], "no such config file"),
    ],
)
def test_bad_input_is_one_clear_line(tmp_path, args, message):
    out = tmp_path / "out"
    proc = run_sft("--data_dir", str(INDUSTRIAL), "--output_dir", str(out), "--tiny_hidden_size", "32",
                   "--tiny_num_layers", "1", *args)
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and message in last, last
    assert "Traceback" not in proc.stderr
    assert not out.exists()


def test_convert_rejects_a_dir_without_splits(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "minirec.data.convert", str(tmp_path), str(tmp_path / "o")],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "error:" in proc.stderr and not (tmp_path / "o").exists()
