"""The shell scripts assemble the flags their names promise (checked with a stand-in interpreter)."""

import os
import subprocess

import pytest

from tests.conftest import ROOT


@pytest.mark.parametrize("script, expected, absent", [
    ("sft.sh", ["--output_dir out/sft", "--tasks next_sid,title_to_sid,sid_to_title"], ["--use_", "--lora_r"]),
    ("sft_lora.sh", ["--use_lora True", "--output_dir out/sft_lora"], ["--use_qlora"]),
    ("sft_qlora.sh", ["--use_qlora True", "--lora_r 16", "--output_dir out/sft_qlora"], ["--use_lora"]),
    ("sft_full.sh", ["--num_epochs 8", "--learning_rate 1.5e-3", "--dense True", "--template sids"], ["--use_lora", "--use_qlora"]),
    ("rl.sh", ["--model_path out/sft_full", "--output_dir out/rl"], ["--use_lora", "--use_qlora"]),
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


@pytest.mark.parametrize("data, epochs", [("data/Industrial_and_Scientific", 8),  # 36,259 train rows
                                          ("data/Office_Products", 16)])  # 7,648: under 20,000
def test_sft_full_sizes_itself_by_train_rows_and_starts_sid_rows_from_text(tmp_path, data, epochs):
    env = {**os.environ, "PYTHON": _fake_python(tmp_path)}
    run = subprocess.run(["bash", "scripts/sft_full.sh", f"DATA={data}"], cwd=ROOT, text=True, capture_output=True,
                         env=env, timeout=60)
    assert run.returncode == 0, run.stderr
    assert f"--num_epochs {epochs} " in run.stdout and f"--data_dir {data} " in run.stdout
    assert f"--sid_init text --item_embeddings {data}/item_embeddings.npy " in run.stdout
    override = subprocess.run(["bash", "scripts/sft_full.sh", f"DATA={data}", "EPOCHS=3", "SID_INIT=auto"], cwd=ROOT,
                              text=True, capture_output=True, env=env, timeout=60)
    assert "--num_epochs 3 " in override.stdout and "--sid_init auto " in override.stdout
    assert "--item_embeddings" not in override.stdout


def test_sft_full_rule_on_other_data_and_bases(tmp_path):
    env = {**os.environ, "PYTHON": _fake_python(tmp_path)}

    def flags(*args):
        run = subprocess.run(["bash", "scripts/sft_full.sh", *args], cwd=ROOT, text=True, capture_output=True,
                             env=env, timeout=60)
        assert run.returncode == 0, run.stderr
        return run.stdout

    own = tmp_path / "own"  # a CSV dataset dir of 100 rows, no item_embeddings.npy
    own.mkdir()
    (own / "train.csv").write_text("header\n" + "row\n" * 100)
    (own / "train_partial.inter").write_text("row\n" * 50000)  # not read when train.csv exists: not counted
    out = flags(f"DATA={own}")
    assert "--num_epochs 16 " in out and "--sid_init auto " in out and "--item_embeddings" not in out
    out = flags(f"DATA={own}", "ITEM_EMBEDDINGS=/e.npy")
    assert "--sid_init text --item_embeddings /e.npy " in out
    out = flags("DATA=data/Office_Products", "BASE_MODEL=/models/qwen")  # pretrained: the tiny rule stays off
    assert "--num_epochs 8 " in out and "--sid_init auto " in out


@pytest.mark.parametrize("flag", [["--data_dir", "data/Office_Products"], ["--data_dir=data/Office_Products"]])
def test_sft_full_refuses_a_data_dir_flag_that_its_sizing_would_not_see(tmp_path, flag):
    """Epochs and item_embeddings.npy come from DATA: an extra --data_dir (which sft.py would take, as the
    last one given) trained Office for Industrial's 8 epochs. One line says to pass DATA=... instead."""
    run = subprocess.run(["bash", "scripts/sft_full.sh", *flag], cwd=ROOT, text=True, capture_output=True,
                         env={**os.environ, "PYTHON": _fake_python(tmp_path)}, timeout=60)
    assert run.returncode == 2 and run.stdout == "", run.stdout  # sft.py never started
    assert run.stderr == ("error: sft_full.sh sizes epochs and picks item_embeddings.npy from DATA, not --data_dir: "
                          "pass DATA=data/Office_Products instead\n"), run.stderr


def _fake_python(tmp_path):
    fake = tmp_path / "python"
    fake.write_text('#!/bin/sh\necho "$@"\n')
    fake.chmod(0o755)
    return str(fake)


@pytest.mark.parametrize("script, entry", [("sft_lora.sh", "sft.py"), ("rl_full.sh", "rl.py"),
                                           ("evaluate.sh", "evaluate.py")])
def test_nproc_launches_torchrun(tmp_path, script, entry):
    """NPROC=N starts N local processes through torchrun; DEEPSPEED=... reaches the command."""
    env = {**os.environ, "PYTHON": _fake_python(tmp_path)}
    args = ["NPROC=8"] + (["DEEPSPEED=configs/deepspeed/zero2.json"] if entry != "evaluate.py" else [])
    out = subprocess.run(["bash", f"scripts/{script}", *args], cwd=ROOT, text=True, capture_output=True, env=env,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"-m torch.distributed.run --standalone --nproc_per_node 8 {entry} "), out.stdout
    assert entry == "evaluate.py" or "--deepspeed configs/deepspeed/zero2.json" in out.stdout
    plain = subprocess.run(["bash", f"scripts/{script}"], cwd=ROOT, text=True, capture_output=True, env=env, timeout=60)
    assert plain.stdout.startswith(f"{entry} "), plain.stdout  # NPROC=1 (default): plain python


def test_bad_nproc_is_one_line(tmp_path):
    out = subprocess.run(["bash", "scripts/sft.sh", "NPROC=two"], cwd=ROOT, text=True, capture_output=True,
                         env={**os.environ, "PYTHON": _fake_python(tmp_path)}, timeout=60)
    assert out.returncode == 2 and out.stderr == "error: NPROC=two: give a positive process count\n"


def test_arrays_that_can_be_empty_survive_set_u_on_old_bash():
    """Every script runs under ``set -u``, where bash < 4.4 (macOS's /bin/bash is 3.2) aborts on
    ``"${ARR[@]}"`` of an empty array ("unbound variable"): no extra flags, no LoRA flags, an
    empty SFT_FLAGS. Such arrays expand as ``${ARR[@]+"${ARR[@]}"}``; LAUNCH is never empty."""
    import re

    bare = []
    for script in sorted((ROOT / "scripts").rglob("*.sh")):
        text = script.read_text()
        for m in re.finditer(r'"\$\{(\w+)\[@\]\}"', text):
            name = m.group(1)
            guarded = text[:m.start()].endswith(f"${{{name}[@]+") and text[m.end():].startswith("}")
            if name != "LAUNCH" and not guarded:
                bare.append(f"{script.relative_to(ROOT)}:{text.count(chr(10), 0, m.start()) + 1}: {m.group(0)}")
    assert not bare, "\n".join(bare)
