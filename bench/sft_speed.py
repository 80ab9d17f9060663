"""SFT and evaluation speed, old recipe vs new, measured in one run on the same machine.

    python bench/sft_speed.py --steps 150

Training: each recipe runs ``sft.py --max_steps N`` in its own process (no evaluation), and
we report non-padding tokens/s and, the fair comparison, seconds per pass over the 36,259
train targets (the old recipe spends one row per target, the dense one packs a user's targets
into one row). Evaluation: ``evaluate.py`` on the same test rows, beam 50, with the model each
recipe just trained (its vocabulary and prompt length set the cost; the beam search does the
same work whatever the weights: K beams, fixed SID depth). Writes ``bench/results/sft_speed.json``.
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECIPES = {
    # scripts/sft_full.sh before the recipe work: compact template, three tasks, 32 x 4 rows.
    "old": ["--tasks", "next_sid,title_to_sid,sid_to_title", "--micro_batch_size", "32", "--batch_size", "128",
            "--learning_rate", "2e-3"],
    # the new default (scripts/sft_full.sh): SID-only template, dense user sequences.
    "new": ["--template", "sids", "--tasks", "next_sid", "--dense", "True", "--batch_size", "32",
            "--micro_batch_size", "32", "--learning_rate", "1.5e-3"],
}


def train_speed(name, flags, steps, work):
    out = Path(work) / name
    cmd = [sys.executable, "sft.py", "--output_dir", str(out), "--max_steps", str(steps), "--report_to", "none",
           "--greedy_eval_rows", "0", "--select_by", "loss", "--eval_steps", str(10 * steps),
           "--early_stopping_patience", "0", *flags]
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True)
    m = json.loads((out / "metrics.json").read_text())
    epochs = m["train"]["epoch"]
    return {"steps": steps, "train_seconds": m["train_seconds"], "tokens_per_second": m["tokens_per_second"],
            "epochs_done": round(epochs, 4), "seconds_per_train_pass": round(m["train_seconds"] / epochs, 1)}


def eval_speed(run, rows, beams):
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "evaluate.py", "--model_path", str(run), "--split", "test", "--num_beams", str(beams),
               "--max_rows", str(rows), "--output_dir", tmp]
        started = time.perf_counter()
        subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True)
        wall = time.perf_counter() - started
        m = json.loads((Path(tmp) / "metrics.json").read_text())
    return {"rows": rows, "num_beams": beams, "decode_seconds": m["wall_seconds"], "process_seconds": round(wall, 1),
            "decode_seconds_per_4533_rows": round(m["wall_seconds"] * 4533 / rows, 1)}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=150, help="optimizer steps per recipe")
    p.add_argument("--eval_rows", type=int, default=4533)
    p.add_argument("--out", default=str(ROOT / "bench/results/sft_speed.json"))
    a = p.parse_args()
    result = {"machine": f"{__import__('os').cpu_count()} CPU cores", "recipes": RECIPES, "train": {}, "eval": {}}
    with tempfile.TemporaryDirectory() as work:
        for name, flags in RECIPES.items():
            result["train"][name] = train_speed(name, flags, a.steps, work)
            print(name, result["train"][name], flush=True)
        for name in RECIPES:
            result["eval"][name] = eval_speed(Path(work) / name, a.eval_rows, 50)
            print(name, result["eval"][name], flush=True)
    t = result["train"]
    result["ratios"] = {
        "tokens_per_second_new_over_old": round(t["new"]["tokens_per_second"] / t["old"]["tokens_per_second"], 2),
        "train_pass_speedup": round(t["old"]["seconds_per_train_pass"] / t["new"]["seconds_per_train_pass"], 2),
    }
    e = result["eval"]
    result["ratios"]["eval_speedup"] = round(e["old"]["decode_seconds"] / e["new"]["decode_seconds"], 2)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["ratios"]))


if __name__ == "__main__":
    main()
