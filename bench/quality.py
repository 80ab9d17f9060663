"""The main results table: minirec SFT and SFT+RL (3 seeds, mean ± std) beside the baselines
and the paper's rows, from evaluations already on disk; rewrites its block in docs/RESULTS.md.

    python bench/quality.py --split test \
        --sft runs/sft_s42,runs/sft_s43,runs/sft_s44 --rl runs/rl_s42,runs/rl_s43,runs/rl_s44 \
        --evals "runs/sft_s42/eval_test_prior,...;runs/sft_s42/eval_test_cf,..." \
        --sasrec runs/baselines/sasrec_s42,... --heuristics runs/baselines

Each minirec run needs ``<run>/eval_<split>/metrics.json`` (``evaluate.py``); each baseline dir
a ``metrics.json`` from ``python -m minirec.baselines``. Nothing is trained here: the numbers
come from the same metric code for every row. Writes ``bench/results/quality_<dataset>.json``
and the block between the ``<!-- quality:<dataset>:begin/end -->`` markers of docs/RESULTS.md.
"""

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout, no install needed

from minirec.report import decoding_label  # noqa: E402
COLS = ("HR@1", "HR@5", "HR@10", "NDCG@5", "NDCG@10", "HR@50", "MRR")
# MiniOneRec paper, Table 1 (test split; ../shared/data/README.md). HR@1/@50 and MRR not published.
PAPER = {
    "Industrial_and_Scientific": {
        "paper: SASRec (BCE, 1 negative)": {"HR@5": .0909, "HR@10": .1088, "NDCG@5": .0748, "NDCG@10": .0806},
        "paper: TIGER": {"HR@5": .1010, "HR@10": .1321, "NDCG@5": .0807, "NDCG@10": .0908},
        "paper: MiniOneRec (Qwen2.5-1.5B, 8 GPUs)": {"HR@5": .1321, "HR@10": .1586, "NDCG@5": .1084,
                                                      "NDCG@10": .1167},
    },
    "Office_Products": {
        "paper: SASRec (BCE, 1 negative)": {"HR@5": .0949, "HR@10": .1120, "NDCG@5": .0805, "NDCG@10": .0858},
        "paper: MiniOneRec (Qwen2.5-1.5B, 8 GPUs)": {"HR@5": .1420, "HR@10": .1634, "NDCG@5": .1172,
                                                      "NDCG@10": .1242},
    },
}


def _runs(spec):
    return [Path(p) for p in spec.split(",") if p]


def _mean_std(metrics_list):
    out = {}
    for c in COLS:
        values = [m[c] for m in metrics_list if c in m]
        if values:
            out[c] = (statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0, len(values))
    return out


def _cell(v):
    if v is None:
        return "–"
    if isinstance(v, tuple):
        mean, std, n = v
        return f"{mean:.4f} ± {std:.4f}" if n > 1 else f"{mean:.4f}"
    return f"{v:.4f}"


def _stage_name(run: Path) -> str:
    """The row name of a run, from the stage its run.json records."""
    stage = json.loads((run / "run.json").read_text()).get("stage", "sft")
    return "minirec SFT+RL" if stage == "rl" else "minirec SFT"


def collect(a):
    rows = []
    for name, spec in (("minirec SFT", a.sft), ("minirec SFT+RL", a.rl)):
        runs = _runs(spec)
        if runs:
            ms = [json.loads((r / f"eval_{a.split}" / "metrics.json").read_text()) for r in runs]
            rows.append((name, _mean_std(ms), [str(r) for r in runs]))
    for group in filter(None, a.evals.split(";")):  # evaluation dirs (evaluate.py --output_dir), one per seed
        dirs = _runs(group)
        ms = [json.loads((d / "metrics.json").read_text()) for d in dirs]
        if any(m.get("split") != a.split for m in ms):
            raise SystemExit(f"--evals {group}: not all are evaluations of {a.split}")
        names = sorted({_stage_name(Path(m["model_path"])) + decoding_label(m) for m in ms})
        if len(names) != 1:
            raise SystemExit(f"--evals {group}: the evaluations differ in what they recorded: {names}")
        rows.append((names[0], _mean_std(ms), [str(d) for d in dirs]))
    if a.sasrec:
        runs = _runs(a.sasrec)
        rows.append(("SASRec (ours, CE over all items)",
                     _mean_std([json.loads((r / "metrics.json").read_text())[a.split] for r in runs]),
                     [str(r) for r in runs]))
    if a.heuristics:
        for b, label in (("recent_popular", "recent history, then most-popular"), ("popularity", "most popular")):
            path = Path(a.heuristics) / b / "metrics.json"
            if path.is_file():
                rows.append((label, _mean_std([json.loads(path.read_text())[a.split]]), [str(path.parent)]))
    if a.split == "test":
        for name, m in PAPER.get(a.dataset, {}).items():
            rows.append((name, m, []))
    return rows


def markdown(rows, split):
    lines = [f"| system ({split}) | " + " | ".join(COLS) + " |", "|---|" + "---:|" * len(COLS)]
    for name, m, _ in rows:
        lines.append(f"| {name} | " + " | ".join(_cell(m.get(c)) for c in COLS) + " |")
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", default="Industrial_and_Scientific")
    p.add_argument("--split", default="test")
    p.add_argument("--sft", default="", help="comma-separated evaluated SFT runs (one per seed)")
    p.add_argument("--rl", default="", help="comma-separated evaluated RL runs (one per seed)")
    p.add_argument("--evals", default="", help="';'-separated groups of comma-separated evaluation dirs (one per "
                   "seed, e.g. with --repeat_prior or --cf_model); each group's row is named from what they recorded")
    p.add_argument("--sasrec", default="", help="comma-separated SASRec baseline dirs (one per seed)")
    p.add_argument("--heuristics", default="", help="dir holding popularity/ and recent_popular/")
    p.add_argument("--results", default=str(ROOT / "docs" / "RESULTS.md"))
    a = p.parse_args()
    rows = collect(a)
    table = markdown(rows, a.split)
    print(table)
    out = ROOT / "bench" / "results" / f"quality_{a.dataset}_{a.split}.json"
    out.write_text(json.dumps([{"system": n, "metrics": {c: list(v) if isinstance(v, tuple) else v
                                                         for c, v in m.items()}, "runs": r}
                               for n, m, r in rows], indent=2) + "\n")
    begin, end = f"<!-- quality:{a.dataset}:{a.split}:begin -->", f"<!-- quality:{a.dataset}:{a.split}:end -->"
    doc = Path(a.results)
    text = doc.read_text() if doc.is_file() else ""
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + begin + "\n" + table + "\n" + end + rest.split(end, 1)[1]
        doc.write_text(text)
        print(f"updated {doc}")
    else:
        print(f"{doc} has no {begin} block; table printed only")


if __name__ == "__main__":
    main()
