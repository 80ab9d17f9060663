from minirec.baselines.heuristics import most_popular, popularity_counts, recent_then_popular


def test_popularity_counts_train_targets_only(tiny):
    counts = popularity_counts(tiny.split("train"))
    assert counts == {"2": 3, "3": 2, "6": 1}  # item 1 is in three histories but never a target


def test_most_popular_ranks_by_count_then_catalogue_order(tiny):
    assert most_popular(tiny.split("train"), tiny.catalogue) == ["2", "3", "6", "1", "4", "5", "7"]


def test_recent_then_popular_puts_history_first_most_recent_first_without_duplicates():
    popular = ["2", "3", "6", "1", "4", "5", "7"]
    ranked = list(recent_then_popular(("4", "1", "3", "1"), popular))
    assert ranked[:3] == ["1", "3", "4"]  # most recent first; the older "1" is not repeated
    assert ranked == ["1", "3", "4", "2", "6", "5", "7"]
    assert len(ranked) == len(set(ranked))
