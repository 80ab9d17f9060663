"""Each user's train sequence, rebuilt from the train split's interaction rows alone.

An interaction row is a sliding window (history -> next item), so a user's consecutive train
rows overlap: row k's history ends with row k-1's history and target. Stitching them gives one
sequence per user whose targets are exactly the train rows' targets, each once, so training
on the sequences (every item after the first a target, as SASRec trains) sees the same
supervision in about a quarter of the tokens. Only train rows are read: no valid or test
target can reach training.
"""

from collections import defaultdict


def user_sequences(rows) -> list[tuple[tuple[str, ...], int]]:
    """Train rows -> ``(items, first_target)`` per stitched run of one user's rows.

    ``items[first_target:]`` are the rows' targets in order; the items before are the first
    row's history (context only). A row whose history does not continue the run (rows out of
    order, or a gap) starts a new run, so nothing is invented and no target is dropped.
    """
    by_user = defaultdict(list)
    for row in rows:
        by_user[row.user].append(row)
    runs = []
    for user_rows in by_user.values():
        items, first = None, 0
        for row in user_rows:
            h = row.history
            if items is not None and len(h) <= len(items) and tuple(items[-len(h):]) == h:
                items.append(row.target)
                continue
            if items is not None:
                runs.append((tuple(items), first))
            items, first = [*h, row.target], len(h)
        runs.append((tuple(items), first))
    return runs
