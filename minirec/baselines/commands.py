"""The three baseline commands behind ``python -m minirec.baselines``; each writes
``<output_dir>/metrics.json`` (one entry per held-out split) and prints a table per split."""

from minirec.baselines.heuristics import most_popular, recent_then_popular
from minirec.baselines.scoring import evaluate_ranker, parse_splits, write_report
from minirec.data import load_dataset


def _heuristic(name, make_ranker, data_dir, split, output_dir, top_k, max_eval_rows):
    splits = parse_splits(split)
    data = load_dataset(data_dir)
    rank_items = make_ranker(data)
    results = {s: evaluate_ranker(rank_items, data.split(s)[: max_eval_rows or None], data.catalogue, top_k=top_k)
               for s in splits}
    return write_report(name, output_dir or f"out/baselines/{name}", data, results, top_k=top_k,
                        popularity="count of train rows with the item as target")


def popularity(data_dir: str = "data/Industrial_and_Scientific", split: str = "valid,test", output_dir: str = "",
               top_k: int = 50, max_eval_rows: int = 0) -> dict:
    """Most-popular items (counted on the train split), the same list for every row."""

    def make(data):
        ranking = most_popular(data.split("train"), data.catalogue)
        return lambda row: ranking

    return _heuristic("popularity", make, data_dir, split, output_dir, top_k, max_eval_rows)


def recent_popular(data_dir: str = "data/Industrial_and_Scientific", split: str = "valid,test",
                   output_dir: str = "", top_k: int = 50, max_eval_rows: int = 0) -> dict:
    """The row's history, most recent first (deduplicated), then the most-popular items."""

    def make(data):
        ranking = most_popular(data.split("train"), data.catalogue)
        return lambda row: recent_then_popular(row.history, ranking)

    return _heuristic("recent_popular", make, data_dir, split, output_dir, top_k, max_eval_rows)


def sasrec(**flags) -> dict:
    """SASRec on item ids, trained on the train split (flags: minirec.baselines.sasrec.SASRecConfig)."""
    from minirec.baselines.sasrec import SASRecConfig
    from minirec.baselines.sasrec_train import run

    return run(SASRecConfig.from_kwargs(**flags))
