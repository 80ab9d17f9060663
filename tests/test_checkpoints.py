"""A damaged checkpoint on resume is refused in one line that names the damaged file and the newest
intact checkpoint, and leaves the run dir as it was; an intact one resumes. Checkpoints here are
a real tiny SFT run's (two steps, one checkpoint each); rl.py's path is in tests/test_bad_input.py."""

import os
import shutil
import subprocess
import sys

import pytest

from minirec.checkpoints import checkpoint_problem, resolve_resume
from minirec.errors import MinirecError
from minirec.sft import SFTConfig
from minirec.sft.train import train
from tests.conftest import INDUSTRIAL, ROOT

pytestmark = pytest.mark.slow

FLAGS = dict(data_dir=str(INDUSTRIAL), tiny_hidden_size=64, tiny_num_layers=2, max_train_rows=64, max_valid_rows=4,
             batch_size=8, micro_batch_size=8, eval_steps=1, early_stopping_patience=0, select_by="loss",
             greedy_eval_rows=0, tasks="next_sid", report_to="none")


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory):
    """An SFT run stopped after its step-2 checkpoint (no run.json): checkpoint-1 and checkpoint-2."""
    out = tmp_path_factory.mktemp("ckpt") / "run"
    train(SFTConfig(output_dir=str(out), max_steps=2, **FLAGS))
    (out / "run.json").unlink()
    assert {p.name for p in out.glob("checkpoint-*")} == {"checkpoint-1", "checkpoint-2"}
    return out


def snapshot(root):
    return {str(p.relative_to(root)): p.is_file() and p.read_bytes() for p in sorted(root.rglob("*"))}


def truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("name", ["model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth",
                                  "trainer_state.json"])
def test_a_damaged_file_of_the_newest_checkpoint_is_refused(interrupted, tmp_path, name):
    out = tmp_path / "run"
    shutil.copytree(interrupted, out)
    truncate(out / "checkpoint-2" / name)
    before = snapshot(out)
    with pytest.raises(MinirecError) as e:
        train(SFTConfig(output_dir=str(out), max_steps=3, resume_from_checkpoint="last", **FLAGS))
    message = str(e.value)
    assert f"checkpoint-2/{name} is damaged" in message, message
    assert f"pass --resume_from_checkpoint {out / 'checkpoint-1'} instead" in message, message
    assert snapshot(out) == before


def test_sft_py_refuses_a_truncated_model_in_one_line(interrupted, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(interrupted, out)
    truncate(out / "checkpoint-2" / "model.safetensors")
    before = snapshot(out)
    argv = [f"--{k}={v}" for k, v in FLAGS.items()]
    proc = subprocess.run([sys.executable, str(ROOT / "sft.py"), *argv, "--max_steps", "3", "--output_dir", str(out),
                           "--resume_from_checkpoint", "last"], cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}, timeout=300)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert f"{out / 'checkpoint-2' / 'model.safetensors'} is damaged" in lines[0], lines
    assert str(out / "checkpoint-1") in lines[0], lines
    assert snapshot(out) == before


def test_no_intact_checkpoint_says_so_and_an_intact_one_resolves(interrupted, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(interrupted, out)
    assert resolve_resume("last", out) == str(out / "checkpoint-2")
    assert resolve_resume(str(out / "checkpoint-1"), out) == str(out / "checkpoint-1")
    assert checkpoint_problem(out / "checkpoint-1") is None
    (out / "checkpoint-2" / "trainer_state.json").unlink()  # a save cut short before its last file
    truncate(out / "checkpoint-1" / "optimizer.pt")
    with pytest.raises(MinirecError, match="trainer_state.json is damaged \\(missing.*no checkpoint in .* is intact"):
        resolve_resume("last", out)
    with pytest.raises(MinirecError, match="checkpoint-1/optimizer.pt is damaged"):
        resolve_resume(str(out / "checkpoint-1"), out)
