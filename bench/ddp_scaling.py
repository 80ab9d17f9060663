"""1 process vs 2 processes for the same SFT work on CPU: wall time and training time.

    python bench/ddp_scaling.py            # writes bench/results/ddp_scaling.json

The same run (tiny model, 64-dim, 2 layers, LoRA, ZeRO-2, global batch 16, 20 optimizer steps,
the same rows) under ``torchrun --nproc_per_node 1`` and ``2``, each process with one thread
(OMP_NUM_THREADS=1, gloo). The global batch is the same, so 2 processes do half the rows each
per step and then all-reduce; ``train_seconds`` (the Trainer's loop) is timed inside the run,
``wall_seconds`` includes start-up (imports, DeepSpeed init, base build).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ARGS = ["--data_dir", "data/Industrial_and_Scientific", "--tiny_hidden_size", "64", "--tiny_num_layers", "2",
        "--use_lora", "True", "--tasks", "next_sid", "--max_train_rows", "320", "--max_valid_rows", "8",
        "--batch_size", "16", "--micro_batch_size", "8", "--max_steps", "20", "--eval_steps", "20",
        "--select_by", "loss", "--report_to", "none", "--greedy_eval_rows", "0", "--logging_steps", "5",
        "--deepspeed", "configs/deepspeed/zero2.json"]


def sft_under_torchrun(nproc: int, args: list, out: Path, env: dict) -> tuple[dict, float]:
    """``sft.py args`` under ``torchrun --nproc_per_node nproc``, one thread per process:
    (its metrics.json, wall seconds)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", **env}
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                           str(nproc), "sft.py", *args, "--output_dir", str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode:
        raise SystemExit(proc.stderr[-3000:])
    return json.loads((out / "metrics.json").read_text()), wall


def one_and_two_processes(run, out: str, **record) -> list:
    """``run(nproc, tmp_dir)`` for 1 then 2 processes; writes the machine, ``record`` and the runs to ``out``."""
    with tempfile.TemporaryDirectory() as tmp:
        results = [run(n, Path(tmp) / f"n{n}") for n in (1, 2)]
    record = {"cpu_cores": os.cpu_count(), "load_average_at_end": os.getloadavg(), **record, "runs": results}
    Path(out).write_text(json.dumps(record, indent=1))
    return results


def run(nproc: int, out: Path) -> dict:
    m, wall = sft_under_torchrun(nproc, ARGS, out, {"DS_BUILD_OPS": "0", "DS_ACCELERATOR": "cpu"})
    return {"processes": nproc, "wall_seconds": round(wall, 1), "train_seconds": m["train_seconds"],
            "global_batch": m["global_batch"],
            "engine": m["engine"], "final_train_loss": m["train"]["train_loss"]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench/results/ddp_scaling.json")
    args = parser.parse_args()
    results = one_and_two_processes(run, args.out)
    for r in results:
        print(f"{r['processes']} process(es): wall {r['wall_seconds']} s, training {r['train_seconds']} s "
              f"({r['engine']}, global batch {r['global_batch']}, 20 steps)")


if __name__ == "__main__":
    main()
