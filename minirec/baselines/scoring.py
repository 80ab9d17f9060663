"""Ranked item lists -> the metrics minirec's evaluation reports, and the report files.

A baseline ranks *items*; minirec's LLM ranks *SIDs*. To compare them on the same footing a
ranked item list becomes a SID list (``catalogue.sid(item)``) in which a SID seen before is
dropped: the items of a collision group share one SID, so the group takes one slot, exactly
as one SID would in the LLM's beam. Then ``rank_of`` / ``ranking_metrics`` as in
``minirec.decoding``.
"""

import time
from itertools import islice

from minirec.errors import MinirecError
from minirec.io import write_json
from minirec.metrics import DEFAULT_KS, format_table, rank_of, ranking_metrics, split_metrics_by_repeat

EVAL_SPLITS = ("valid", "test")


def parse_splits(split) -> tuple[str, ...]:
    """``"test"``, ``"valid,test"`` or a list -> a tuple of held-out split names."""
    names = [s.strip() for s in (split.split(",") if isinstance(split, str) else split)]
    unknown = [s for s in names if s not in EVAL_SPLITS]
    if not names or unknown or len(set(names)) != len(names):
        raise MinirecError(f"--split {split!r}: choose from {', '.join(EVAL_SPLITS)} (comma-separated, no repeats)")
    return tuple(names)


def ranked_sids(items, catalogue, top_k=50) -> list[str]:
    """The first ``top_k`` distinct SIDs of a ranked item iterable (first occurrence kept)."""
    seen = {}  # a dict keeps insertion order: the ranked SIDs
    for item in items:
        seen.setdefault(catalogue.sid(item), None)
        if len(seen) == top_k:
            break
    return list(seen)


def score(sid_lists, rows, catalogue, ks=DEFAULT_KS, seconds=0.0) -> dict:
    """Metrics of one split: HR/NDCG/MRR@K, the repeat-row split, coverage@10, row count."""
    ranks = [rank_of(sids, catalogue.sid(row.target)) for sids, row in zip(sid_lists, rows, strict=True)]
    top10 = {s for sids in sid_lists for s in islice(sids, 10)}
    return {
        **ranking_metrics(ranks, ks),
        **split_metrics_by_repeat(ranks, rows),
        "coverage@10": len(top10) / len(catalogue.items_by_sid),
        "rows": len(rows),
        "wall_seconds": round(seconds, 2),
    }


def evaluate_ranker(rank_items, rows, catalogue, ks=DEFAULT_KS, top_k=50) -> dict:
    """``rank_items(row)`` -> ranked item iterable (best first); scored on ``rows``."""
    started = time.perf_counter()
    sid_lists = [ranked_sids(rank_items(row), catalogue, top_k) for row in rows]
    return score(sid_lists, rows, catalogue, ks, time.perf_counter() - started)


def write_report(name, output_dir, data, results: dict, ks=DEFAULT_KS, **extra) -> dict:
    """``metrics.json`` (atomically) with one entry per split, plus a printed table per split."""
    report = {"baseline": name, "data_dir": str(data.root), "index_sha256": data.catalogue.index_sha256,
              "ks": list(ks), **extra, **results}
    write_json(f"{output_dir}/metrics.json", report)
    for split, metrics in results.items():
        print(f"{name} on {split}:")
        print(format_table(metrics, ks))
    print(f"wrote {output_dir}/metrics.json")
    return report
