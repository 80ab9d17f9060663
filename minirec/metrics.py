"""Ranking metrics over ranked SID lists, as defined in the MiniOneRec paper.

One target per row. ``rank`` is the 0-based position of the first prediction whose SID
string equals the target's SID (any item of a collision group counts), or ``None``.

* HR@K   = mean[rank < K]
* NDCG@K = mean[[rank < K] / log2(rank + 2)]
* MRR    = mean[1 / (rank + 1)], 0 when the target is absent; MRR@K only counts rank < K.

Also here: HR@K and NDCG@K split by repeat rows (the target is already in the history) and the printed
table, so every evaluation (the LLM's and the baselines') reports the same way.
"""

import math

DEFAULT_KS = (1, 3, 5, 10, 20, 50)


def rank_of(predictions, target):
    for i, p in enumerate(predictions):
        if p == target:
            return i
    return None


def ranking_metrics(ranks, ks=DEFAULT_KS) -> dict:
    n = len(ranks)
    if n == 0:
        raise ValueError("no rows to score")
    out = {}
    for k in ks:
        hits = [r for r in ranks if r is not None and r < k]
        out[f"HR@{k}"] = len(hits) / n
        out[f"NDCG@{k}"] = sum(1 / math.log2(r + 2) for r in hits) / n
        out[f"MRR@{k}"] = sum(1 / (r + 1) for r in hits) / n
    out["MRR"] = sum(1 / (r + 1) for r in ranks if r is not None) / n
    return out


def split_metrics_by_repeat(ranks, rows, k=10, max_history=0) -> dict:
    """HR@k and NDCG@k separately on *repeat rows* (the target item id is already in the row's
    history: its last ``max_history`` items when > 0, what the prompt shows) and on the other,
    *new* rows, with both counts. ``rows`` align with ``ranks`` and have ``.history`` and
    ``.target``. A repeat-purchase heuristic scores high on the first group only, so the split
    shows where a model's hits come from. A group with no rows reports None."""
    if len(ranks) != len(rows):
        raise ValueError(f"{len(ranks)} ranks for {len(rows)} rows")
    groups = {True: [], False: []}
    for r, row in zip(ranks, rows):
        shown = row.history[-max_history:] if max_history else row.history
        groups[row.target in shown].append(r)

    def rate(group, metric):
        return ranking_metrics(group, (k,))[f"{metric}@{k}"] if group else None

    return {"repeat_rows": len(groups[True]), "new_rows": len(groups[False]),
            f"HR@{k}_repeat": rate(groups[True], "HR"), f"NDCG@{k}_repeat": rate(groups[True], "NDCG"),
            f"HR@{k}_new": rate(groups[False], "HR"), f"NDCG@{k}_new": rate(groups[False], "NDCG")}


def format_table(metrics, ks) -> str:
    """HR/NDCG/MRR per K, then one summary line with whichever extras ``metrics`` holds."""
    lines = [f"{'K':>4} {'HR@K':>8} {'NDCG@K':>8} {'MRR@K':>8}"]
    lines += [f"{k:>4} {metrics[f'HR@{k}']:>8.4f} {metrics[f'NDCG@{k}']:>8.4f} {metrics[f'MRR@{k}']:>8.4f}" for k in ks]
    parts = [f"MRR {metrics['MRR']:.4f}"]
    if "invalid_predictions" in metrics:
        parts.append(f"invalid predictions {metrics['invalid_predictions']}")
    if "coverage@10" in metrics:
        parts.append(f"coverage@10 {metrics['coverage@10']:.4f}")
    if "repeat_rows" in metrics:
        fmt = lambda x: "n/a" if x is None else f"{x:.4f}"  # noqa: E731
        parts.append(f"HR@10 repeat {fmt(metrics['HR@10_repeat'])} ({metrics['repeat_rows']} rows) / "
                     f"new {fmt(metrics['HR@10_new'])}")
    parts.append(f"{metrics['rows']} rows in {metrics['wall_seconds']:.1f}s")
    lines.append(" | ".join(parts))
    return "\n".join(lines)
