"""The three baselines behind ``python -m minirec.baselines``; each writes
``<output_dir>/metrics.json`` (one entry per held-out split) and prints a table per split.

``run_popularity``, ``run_recent_popular`` and ``run_sasrec`` take a checked config
(:class:`PopularityConfig`, :class:`RecentPopularConfig` or :class:`~minirec.baselines.sasrec.SASRecConfig`);
``popularity(...)``, ``recent_popular(...)`` and ``sasrec(...)`` take the same flags as keyword
arguments, for Python callers.
"""

from dataclasses import dataclass

from minirec.baselines.heuristics import most_popular, recent_then_popular
from minirec.baselines.sasrec import SASRecConfig
from minirec.baselines.scoring import evaluate_ranker, parse_splits, write_report
from minirec.config import Config
from minirec.data import load_dataset
from minirec.errors import MinirecError


@dataclass
class HeuristicConfig(Config):
    data_dir: str = "data/Industrial_and_Scientific"
    """Dataset dir: index.json and train/valid/test (popularity is counted on train)."""
    split: str = "valid,test"
    """Held-out split(s) to score, comma-separated: valid, test."""
    output_dir: str = "out/baselines/popularity"
    """Where metrics.json goes."""
    top_k: int = 50
    """Distinct SIDs ranked per row (the LLM's beam width)."""
    max_eval_rows: int = 0
    """Score only the first N rows of each split (0 = all); for smoke runs."""

    def validate(self) -> None:
        parse_splits(self.split)
        if self.top_k <= 0 or self.max_eval_rows < 0:
            raise MinirecError(f"--top_k must be positive and --max_eval_rows >= 0, got {self.top_k}, "
                               f"{self.max_eval_rows}")

    def output(self):
        return "--output_dir", self.output_dir


@dataclass
class PopularityConfig(HeuristicConfig):
    """The flags of ``popularity``."""


@dataclass
class RecentPopularConfig(HeuristicConfig):
    """The flags of ``recent_popular``: the same, with its own default --output_dir."""

    output_dir: str = "out/baselines/recent_popular"
    """Where metrics.json goes."""


def _heuristic(name, make_ranker, config: HeuristicConfig):
    splits = parse_splits(config.split)
    data = load_dataset(config.data_dir)
    rank_items = make_ranker(data)
    rows = {s: data.split(s)[: config.max_eval_rows or None] for s in splits}
    results = {s: evaluate_ranker(rank_items, r, data.catalogue, top_k=config.top_k) for s, r in rows.items()}
    return write_report(name, config.output_dir, data, results, top_k=config.top_k,
                        popularity="count of train rows with the item as target")


def run_popularity(config: PopularityConfig) -> dict:
    """Most-popular items (counted on the train split), the same list for every row."""

    def make(data):
        ranking = most_popular(data.split("train"), data.catalogue)
        return lambda row: ranking

    return _heuristic("popularity", make, config)


def run_recent_popular(config: RecentPopularConfig) -> dict:
    """The row's history, most recent first (deduplicated), then the most-popular items."""

    def make(data):
        ranking = most_popular(data.split("train"), data.catalogue)
        return lambda row: recent_then_popular(row.history, ranking)

    return _heuristic("recent_popular", make, config)


def run_sasrec(config: SASRecConfig) -> dict:
    """SASRec on item ids, trained on the train split with early stopping on valid HR@10 + NDCG@10."""
    from minirec.baselines.sasrec_train import run

    return run(config)


def popularity(**flags) -> dict:
    return run_popularity(PopularityConfig.checked(**flags))


def recent_popular(**flags) -> dict:
    return run_recent_popular(RecentPopularConfig.checked(**flags))


def sasrec(**flags) -> dict:
    return run_sasrec(SASRecConfig.checked(**flags))
