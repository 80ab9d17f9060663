"""Ranking metrics over ranked SID lists, as defined in the MiniOneRec paper.

One target per row. ``rank`` is the 0-based position of the first prediction whose SID
string equals the target's SID (any item of a collision group counts), or ``None``.

* HR@K   = mean[rank < K]
* NDCG@K = mean[[rank < K] / log2(rank + 2)]
* MRR    = mean[1 / (rank + 1)], 0 when the target is absent; MRR@K only counts rank < K.
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
