"""Make every item's SID unique.

Two steps, in this order:

1. Last-level reassignment. In each group of items that share a full code tuple, the item
   closest to its last-level centroid keeps the code; each other one (closest first) moves
   to the nearest last-level code whose full tuple nobody uses yet. This costs no depth and
   keeps the prefix (the coarse levels) intact.
2. An explicit extra level, when a prefix has no free last-level code left (more items
   under one prefix than the codebook holds) or reassignment is switched off: every member
   of a remaining group gets one more token, ``<d_0>``, ``<d_1>``, ... (letter after the last
   level). All members get it, not all but one, so that no SID is a prefix of another.

Why hand-written: it is a bookkeeping pass over a set of used tuples; no library does it.
"""

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from minirec.sid.quantize import sq_distances


def level_prefix(level: int) -> str:
    if not 0 <= level < 26:
        raise ValueError(f"SID level {level} has no letter; at most 26 levels")
    return chr(ord("a") + level)


def sid_tokens(codes) -> list[str]:
    return [f"<{level_prefix(level)}_{int(c)}>" for level, c in enumerate(codes)]


def collision_summary(tuples) -> dict:
    groups = defaultdict(int)
    for t in tuples:
        groups[tuple(t)] += 1
    n = len(tuples)
    colliding = sum(size for size in groups.values() if size > 1)
    return {
        "distinct_sids": len(groups),
        "colliding_items": colliding,
        "collision_groups": sum(1 for size in groups.values() if size > 1),
        "largest_group": max(groups.values()) if groups else 0,
        "collision_rate": round(colliding / n, 6) if n else 0.0,
    }


@dataclass
class Resolved:
    codes: list[tuple[int, ...]]   # per item; length levels, or levels + 1 for the extra level
    reassigned: list[int]          # item indices moved to another last-level code
    extra_level: list[int]         # item indices that got the extra level
    before: dict
    after: dict


def resolve_collisions(codes: np.ndarray, last_residual=None, last_codebook=None,
                       reassign: bool = True) -> Resolved:
    """``codes`` [n, levels] -> unique code tuples (see the module docstring)."""
    codes = np.asarray(codes, dtype=np.int64).copy()
    before = collision_summary([tuple(row) for row in codes])
    groups = defaultdict(list)
    for i, row in enumerate(codes):
        groups[tuple(row)].append(i)
    reassigned = []
    if reassign and before["colliding_items"]:
        if last_residual is None or last_codebook is None:
            raise ValueError("reassignment needs the last-level residuals and codebook")
        taken = set(groups)
        for sid in sorted(k for k, members in groups.items() if len(members) > 1):
            members = groups[sid]
            dist = sq_distances(np.asarray(last_residual)[members], np.asarray(last_codebook))
            own = dist[np.arange(len(members)), sid[-1]]
            order = sorted(range(len(members)), key=lambda j: (own[j], members[j]))
            for j in order[1:]:  # order[0] keeps the code
                for code in np.argsort(dist[j], kind="stable"):
                    candidate = sid[:-1] + (int(code),)
                    if candidate not in taken:
                        taken.add(candidate)
                        codes[members[j], -1] = code
                        reassigned.append(members[j])
                        break
    final = [tuple(int(c) for c in row) for row in codes]
    groups = defaultdict(list)
    for i, row in enumerate(final):
        groups[row].append(i)
    extra_level = []
    for members in groups.values():
        if len(members) > 1:
            for rank, i in enumerate(sorted(members)):
                final[i] = final[i] + (rank,)
                extra_level.append(i)
    after = collision_summary(final)
    assert after["colliding_items"] == 0, "collision resolution left shared SIDs"
    return Resolved(final, sorted(reassigned), sorted(extra_level), before, after)
