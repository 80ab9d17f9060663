"""Two non-learned baselines: most-popular, and the user's own recent items then most-popular.

Popularity is counted on the train split only, as the number of train rows whose *target*
is the item. History items are not counted: the train rows are overlapping sliding windows,
so an interaction sits in up to 10 histories and counting them weights an item by how many
later interactions its user had. On Industrial the target count reproduces the published
most-popular reference (test HR@10 .0609 / NDCG@10 .0501); adding every history item gave
.0543 / .0481, adding each user's first item (each interaction counted once) .0549 / .0485.
Ties keep catalogue (index.json) order, and items never seen in train come last, so every
ranking covers the whole catalogue.
"""

from collections import Counter
from itertools import chain


def popularity_counts(train_rows) -> Counter:
    """Item id -> number of train rows with that target."""
    return Counter(row.target for row in train_rows)


def most_popular(train_rows, catalogue) -> list[str]:
    """Every catalogue item, most popular first (stable sort: ties in catalogue order)."""
    counts = popularity_counts(train_rows)
    return sorted(catalogue.sids, key=lambda item: -counts[item])


def recent_then_popular(history, popular):
    """The row's history, most recent first, then ``popular``; each item once.

    The repeat-purchase heuristic: what a user bought lately is a strong guess for what
    comes next (about 5 % of valid rows repeat an item of their history). A generator, so
    the caller stops reading as soon as it has enough SIDs.
    """
    seen = set()
    for item in chain(reversed(history), popular):
        if item not in seen:
            seen.add(item)
            yield item
