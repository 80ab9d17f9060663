"""SFT's selection search (valid HR@10 + NDCG@10 by constrained beam search) on 1 vs 2 processes.

    python bench/sft_selection_scaling.py    # writes bench/results/sft_selection_scaling.json

The same SFT run (tiny model, 2 optimizer steps, an evaluation at step 1 and of the best
checkpoint at the end, ``--select_rows 128 --select_beams 20``) under ``torchrun
--nproc_per_node 1`` and ``2``, one thread per process (OMP_NUM_THREADS=1, gloo). Each process
decodes every 2nd row and the ranks are gathered, so the search should take about half as long
on 2 processes; ``eval_rank_seconds`` (the search alone, timed in the Trainer) is reported.
"""

import argparse
from pathlib import Path

from ddp_scaling import one_and_two_processes, sft_under_torchrun  # bench/ is on the path: python bench/...

ARGS = ["--data_dir", "data/Industrial_and_Scientific", "--tasks", "next_sid", "--max_train_rows", "64",
        "--max_valid_rows", "128", "--select_rows", "128", "--select_beams", "20", "--batch_size", "16",
        "--micro_batch_size", "8", "--max_steps", "2", "--eval_steps", "1", "--report_to", "none",
        "--greedy_eval_rows", "0", "--early_stopping_patience", "0"]


def run(nproc: int, out: Path) -> dict:
    m, wall = sft_under_torchrun(nproc, ARGS, out, {})
    searches = [h["eval_rank_seconds"] for h in m["log_history"] if "eval_rank_seconds" in h]
    return {"processes": nproc, "rank_seconds": searches, "final_rank_seconds": m["final_eval"]["eval_rank_seconds"],
            "wall_seconds": round(wall, 1), "best_metric": m["best_metric"]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench/results/sft_selection_scaling.json")
    args = parser.parse_args()
    results = one_and_two_processes(run, args.out, rows=128, beams=20)
    for r in results:
        print(f"{r['processes']} process(es): selection search {r['rank_seconds']} s per evaluation "
              f"(final {r['final_rank_seconds']} s), best HR@10 + NDCG@10 {r['best_metric']}")


if __name__ == "__main__":
    main()
