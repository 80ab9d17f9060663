"""Choose evaluate.py's --repeat_prior, --repeat_bonus and --repeat_decay on valid: one beam search,
one history scoring, then every (prior, bonus, decay) of a grid reranks the same lists (no re-decoding).

    python bench/repeat_bonus.py --model_path out/sft_full --split valid --num_beams 50 \
        --priors 0,0.25,0.5,1,2 --bonuses 0,0.5,1,2,4,8 --decays 1,0.8,0.6

Reports overall HR@10/NDCG@10 and the same on repeat rows (the target is in the shown history) and
new rows, for each setting, and the setting with the best HR@10 + NDCG@10 (SFT's selection criterion),
in bench/results/repeat_bonus.json. Also the largest gap between a history SID's exact score and
the beam's score for it (:mod:`minirec.repeats` says they are the same). Test is refused: a weight
chosen on test would report an optimistic test number.
"""

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout, no install needed

from minirec.data import load_dataset  # noqa: E402
from minirec.decoding import rank_sids  # noqa: E402
from minirec.distributed import to_process_device  # noqa: E402
from minirec.io import write_json  # noqa: E402
from minirec.metrics import rank_of, ranking_metrics, split_metrics_by_repeat  # noqa: E402
from minirec.repeats import history_scores, history_sids, repeat_rates, rerank_with_history  # noqa: E402

SPLITS = ("train", "valid")  # never test: the weight is chosen here


def _floats(text):
    return [float(x) for x in text.split(",") if x.strip()]


def scored(ranked, rows, catalogue, max_history) -> dict:
    """HR@10 / NDCG@10 overall, on repeat rows and on new rows."""
    ranks = [rank_of([s for s, _ in preds], catalogue.sid(row.target)) for preds, row in zip(ranked, rows)]
    overall = ranking_metrics(ranks, (10,))
    split = split_metrics_by_repeat(ranks, rows, max_history=max_history)
    return {"HR@10": overall["HR@10"], "NDCG@10": overall["NDCG@10"],
            **{k: v for k, v in split.items() if k.startswith(("HR@10_", "NDCG@10_"))}}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model_path", required=True, help="a finished run dir (it holds run.json)")
    p.add_argument("--split", default="valid", help="valid (or train); test is refused")
    p.add_argument("--num_beams", type=int, default=50)
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--max_rows", type=int, default=0, help="the first N rows of the split (0 = all)")
    p.add_argument("--priors", default="0", help="comma-separated repeat priors (>= 0)")
    p.add_argument("--bonuses", default="0,0.5,1,2,3,4,6,8", help="comma-separated bonuses (>= 0)")
    p.add_argument("--decays", default="1,0.9,0.8,0.6", help="comma-separated decays in (0, 1]")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "repeat_bonus.json"))
    a = p.parse_args(argv)
    if a.split not in SPLITS:
        p.error(f"--split {a.split!r}: choose {' or '.join(SPLITS)}; "
                "bonus and decay are chosen on valid, never on test")
    priors, bonuses, decays = _floats(a.priors), _floats(a.bonuses), _floats(a.decays)
    if not priors or not bonuses or not decays or min(priors + bonuses) < 0 or not all(0 < d <= 1 for d in decays):
        p.error("--priors and --bonuses must be >= 0 and --decays in (0, 1], each a non-empty comma list")
    if a.split == "train" and any(priors):
        p.error("--priors on --split train: the rates come from the train split, so each row would count its own "
                "target; use valid")

    from minirec.modeling.loading import load_trained

    model, tokenizer, run = load_trained(a.model_path)
    to_process_device(model)
    data = load_dataset(run.data_dir, splits=(a.split, "train") if any(priors) else (a.split,))
    run.check_index(data.catalogue)
    catalogue, rows = data.catalogue, data.split(a.split)[: a.max_rows or None]
    histories = [r.history for r in rows]
    started = time.perf_counter()
    ranked = rank_sids(model, tokenizer, catalogue, histories, run.template, run.max_history, a.num_beams, a.batch_size)
    beam_seconds = time.perf_counter() - started
    exact = history_scores(model, tokenizer, catalogue, histories, run.template, run.max_history, a.batch_size)
    history_seconds = time.perf_counter() - started - beam_seconds
    shown = [history_sids(h, catalogue, run.max_history) for h in histories]
    gaps = [abs(score - dict(preds)[sid]) for preds, row in zip(ranked, exact)
            for sid, score in row.items() if sid in dict(preds)]

    rates = repeat_rates(data.split("train"), catalogue, run.max_history) if any(priors) else None
    grid = []
    for prior in priors:
        for bonus in bonuses:
            for decay in decays if bonus else decays[:1]:  # bonus 0: the same lists whatever the decay
                reranked = rerank_with_history(ranked, exact, shown, bonus, decay, prior, rates)
                grid.append({"prior": prior, "bonus": bonus, "decay": decay,
                             **scored(reranked, rows, catalogue, run.max_history)})
    # ties: the smaller prior, then the smaller bonus
    best = max(grid, key=lambda g: (g["HR@10"] + g["NDCG@10"], -g["prior"], -g["bonus"]))
    result = {
        "model_path": str(a.model_path), "split": a.split, "rows": len(rows),
        # the row counts only (no ranks needed for them)
        "repeat_rows": split_metrics_by_repeat([None] * len(rows), rows, max_history=run.max_history)["repeat_rows"],
        "num_beams": a.num_beams, "max_history": run.max_history,
        "beam_seconds": round(beam_seconds, 2), "history_scoring_seconds": round(history_seconds, 2),
        "history_sids_in_beam_lists": len(gaps), "max_score_diff_vs_beam": float(f"{max(gaps, default=0.0):.3g}"),
        "repeat_rates": rates.describe() if rates else None, "best": best, "grid": grid,
    }
    write_json(Path(a.out), result)
    print(f"{'prior':>6} {'bonus':>6} {'decay':>5} {'HR@10':>7} {'NDCG@10':>7} {'HR rep':>7} {'HR new':>7}")
    for g in grid:
        rep, new = (f"{g[k]:.4f}" if g[k] is not None else "n/a" for k in ("HR@10_repeat", "HR@10_new"))
        setting = f"{g['prior']:>6g} {g['bonus']:>6g} {g['decay']:>5g}"
        print(f"{setting} {g['HR@10']:>7.4f} {g['NDCG@10']:>7.4f} {rep:>7} {new:>7}")
    print(json.dumps({"best": best, "max_score_diff_vs_beam": result["max_score_diff_vs_beam"]}))
    print(f"wrote {a.out}")
    return result


if __name__ == "__main__":
    main()
