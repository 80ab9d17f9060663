"""One run per output: a second process aimed at what a live run writes stops at once, naming it;
a run killed with SIGKILL leaves no hold behind. Real processes throughout."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from minirec.output_lock import hold, lock_path
from tests.conftest import INDUSTRIAL, ROOT

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
HOLDER = ("import sys, time, contextlib\nfrom minirec.output_lock import hold\n"
          "with contextlib.ExitStack() as stack:\n"
          "    for path in sys.argv[1:]: stack.enter_context(hold(path))\n"
          "    print('held', flush=True); time.sleep(600)\n")


def start(argv, **kw):
    return subprocess.Popen([sys.executable, *argv], cwd=ROOT, env=ENV, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, **kw)


def wait_for(predicate, what, timeout=180):
    deadline = time.time() + timeout
    while not predicate():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def refused(proc, holder_pid, timeout=120):
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:  # it did not stop: it runs on what it should not have
        proc.kill()
        raise
    assert proc.returncode == 2 and err.startswith("error: ") and err.count("\n") == 1, (proc.returncode, err)
    assert f"is in use by process {holder_pid} (" in err, err
    return err


@pytest.mark.slow
def test_a_second_sft_into_a_live_runs_dir_stops_at_once_and_a_killed_run_leaves_no_hold(tmp_path):
    out = tmp_path / "x"
    sft = ["sft.py", "--output_dir", str(out), "--data_dir", str(INDUSTRIAL), "--tiny_hidden_size", "64",
           "--tiny_num_layers", "2", "--max_train_rows", "64", "--max_valid_rows", "8", "--batch_size", "8",
           "--micro_batch_size", "8", "--max_steps", "100000", "--select_by", "loss", "--report_to", "none",
           "--greedy_eval_rows", "0", "--tasks", "next_sid"]
    first = start(sft, start_new_session=True)
    try:
        wait_for(lambda: lock_path(out).is_file() and lock_path(out).read_text().strip(), "the first run's hold")
        assert json.loads(lock_path(out).read_text())["pid"] == first.pid
        second = start(sft)
        err = refused(second, first.pid)
        assert "sft.py --output_dir" in err and first.poll() is None  # the first run goes on
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=60)
    assert lock_path(out).is_file()  # SIGKILL left its file, but not its hold:
    taken = subprocess.run([sys.executable, "-c", f"from minirec.output_lock import hold\nwith hold({str(out)!r}): "
                            "print('taken')"], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120)
    assert taken.stdout.strip() == "taken", taken.stderr[-2000:]
    assert not lock_path(out).exists()  # an orderly end removes it


def test_every_command_that_writes_refuses_a_held_output(tmp_path):
    run = tmp_path / "run"  # a finished run as far as the commands' checks go
    run.mkdir()
    (run / "run.json").write_text(json.dumps({
        "base_model": "tiny", "base_model_path": ".", "mode": "lora", "template": "compact", "max_history": 10,
        "tasks": ["next_sid"], "data_dir": str(INDUSTRIAL), "sid_index_sha256": "0"}))
    t = tmp_path
    commands = {  # command -> (argv, what it writes)
        "sft": (["sft.py", "--output_dir", f"{t}/sft", "--data_dir", str(INDUSTRIAL)], t / "sft"),
        "rl": (["rl.py", "--model_path", str(run), "--output_dir", f"{t}/rl"], t / "rl"),
        "evaluate": (["evaluate.py", "--model_path", str(run)], run / "eval_test"),
        "merge": (["-m", "minirec.merge", "--model_path", str(run), "--output_dir", f"{t}/merged"], t / "merged"),
        "prepare": (["-m", "minirec.data.prepare", "--out", f"{t}/data", "--items", "i.json", "--sequences", "s.json"],
                    t / "data"),
        "convert": (["-m", "minirec.data.convert", str(INDUSTRIAL), f"{t}/converted"], t / "converted"),
        "build": (["-m", "minirec.sid", "build", "--items", "i.json", "--out", f"{t}/index.json"], t / "index.json"),
        "report": (["-m", "minirec.report", "--out", f"{t}/report.md"], t / "report.md"),
        **{b: (["-m", "minirec.baselines", b, "--output_dir", f"{t}/{b}"], t / b)
           for b in ("popularity", "recent_popular", "sasrec")},
    }
    holder, procs = start(["-c", HOLDER, *(str(path) for _, path in commands.values())]), []
    try:
        assert holder.stdout.readline().strip() == "held", holder.stderr.read()
        procs = [start(argv) for argv, _ in commands.values()]
        for proc in procs:
            refused(proc, holder.pid)
    finally:
        for proc in [*procs, holder]:
            proc.kill()
        holder.wait(timeout=60)
    assert not any(path.exists() for _, path in commands.values())  # nothing was written


def test_the_same_output_cannot_be_held_twice(tmp_path):
    """Within one process too (two open files are two holds), and the hold ends with the block."""
    from minirec.errors import MinirecError

    with hold(tmp_path / "o"):
        with pytest.raises(MinirecError, match="is in use by process"):
            with hold(tmp_path / "o"):
                pass
    with hold(tmp_path / "o"):
        pass


def test_a_run_that_writes_nothing_leaves_no_dirs(tmp_path):
    with hold(tmp_path / "a" / "b" / "run"):
        assert (tmp_path / "a" / "b").is_dir()
    assert list(tmp_path.iterdir()) == []
    with hold(tmp_path / "a" / "run"):
        (tmp_path / "a" / "run").mkdir()  # what it wrote stays
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["run"]


def test_sigterm_removes_the_lock_file_and_still_ends_the_process(tmp_path):
    out = tmp_path / "index.json"
    holder = start(["-c", HOLDER, str(out)])
    try:
        assert holder.stdout.readline().strip() == "held", holder.stderr.read()
        assert lock_path(out).is_file()
        holder.send_signal(signal.SIGTERM)
        holder.wait(timeout=60)
    finally:
        holder.kill()
    assert holder.returncode == -signal.SIGTERM  # it still dies by SIGTERM (a shell shows 143)
    assert not lock_path(out).exists() and list(tmp_path.iterdir()) == []
