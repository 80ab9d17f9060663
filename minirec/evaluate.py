"""Offline evaluation of a run: constrained beam search on a split, HR@K / NDCG@K / MRR.

    python evaluate.py --model_path out/sft_full --split test --num_beams 50

Writes ``predictions.jsonl``, ``metrics.json`` and ``metrics.png`` (atomically) into
``--output_dir`` (default ``<model_path>/eval_<split>``) and prints a table. Under
``torchrun --nproc_per_node N`` the rows are sharded across processes and the merged metrics
equal a single-process run's (each row is decoded independently). ``--repeat_bonus`` adds each
row's history items to its list with their exact scores plus a bonus (:mod:`minirec.repeats`);
``--cf_model DIR --cf_weight W`` fuses a collaborative teacher into every beam step
(:mod:`minirec.teacher`).
"""

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from minirec.config import Config
from minirec.data import load_dataset
from minirec.decoding import build_trie, cf_guidance, rank_sids
from minirec.distributed import process_device, to_process_device
from minirec.data.readers import SPLITS
from minirec.errors import MinirecError
from minirec.io import write_json, write_jsonl
from minirec.metrics import DEFAULT_KS, format_table, rank_of, ranking_metrics, split_metrics_by_repeat
from minirec.repeats import add_history_items, check_repeat_flags, repeat_rates
from minirec.run_info import RUN_FILE, RunInfo, check_merge_weights
from minirec.teacher import check_cf_options, check_teacher_dir, load_teacher

log = logging.getLogger(__name__)


@dataclass
class EvalConfig(Config):
    model_path: str
    """A finished run dir (sft.py, rl.py or python -m minirec.merge wrote it; it holds run.json)."""
    split: str = "test"
    """The split to evaluate: train, valid or test."""
    num_beams: int = 50
    """Beam width of the constrained beam search: how many ranked SIDs each row gets."""
    batch_size: int = 64
    """Prompts decoded together (rows are decoded independently: the lists do not depend on it; the
    beam search caps prompt x beam rows per call by the vocabulary size, so large vocabularies stay
    bounded). 64 vs 16: full Industrial test 44.5 vs 54.5 s, 2 threads, the same lists."""
    max_rows: int = 0
    """Evaluate only the first N rows of the split (0 = all)."""
    max_history: int = 0
    """Show at most this many of each row's most recent history items (0 = the run's --max_history).
    A run trained on dense rows (--dense) saw up to 2 x its max_history - 1 items before a target."""
    ks: str = ",".join(map(str, DEFAULT_KS))
    """Cut-offs K of HR@K, NDCG@K and MRR@K, comma-separated; those above --num_beams are dropped."""
    data_dir: str = ""
    """Dataset dir; default: the one recorded in the run. Its index.json must be the run's."""
    output_dir: str = ""
    """Where predictions.jsonl, metrics.json and metrics.png go; default: <model_path>/eval_<split>."""
    repeat_bonus: float = 0.0
    """Add the row's shown history items to each ranked list with their exact model score plus this
    bonus (times --repeat_decay per step back in the history); 0 = off. Choose it on valid with
    bench/repeat_bonus.py."""
    repeat_decay: float = 1.0
    """In (0, 1]: the bonus of a history item k steps back from the most recent is bonus * decay**k."""
    repeat_prior: float = 0.0
    """Add the shown history items with score log(exp(model score) + this x the item's re-purchase
    rate in the train split): items people re-buy join the list, others stay where the model put
    them; 0 = off. Choose it on valid with bench/repeat_bonus.py --priors. The default --output_dir
    is the same with or without it: pass another one to keep both evaluations."""
    cf_model: str = ""
    """A collaborative teacher: a python -m minirec.baselines sasrec output dir trained on this run's
    catalogue. With --cf_weight W, every beam step ranks a prefix by the model's log-probability plus W
    x the teacher's (CF-guided decoding); "" = the model alone."""
    cf_weight: float | None = None
    """W of --cf_model, >= 0 (0 = the model's ranking exactly); choose it on valid with bench/cf_weight.py."""
    merge_weights: bool = False
    """Merge an adapter into its base before decoding (faster; the same ranking up to rounding)."""
    trust_remote_code: bool = False
    """Allow the checkpoint's own modelling code to run."""

    def validate(self) -> None:
        if self.split not in SPLITS:
            raise MinirecError(f"--split {self.split!r}: choose one of {', '.join(SPLITS)}")
        if self.num_beams <= 0 or self.batch_size <= 0 or self.max_rows < 0 or self.max_history < 0:
            raise MinirecError("--num_beams and --batch_size must be positive, --max_rows and --max_history >= 0")
        check_repeat_flags(self)
        check_cf_options(self.cf_model, self.cf_weight)
        if self.repeat_prior and self.split == "train":
            raise MinirecError("--repeat_prior on --split train: the re-purchase rates come from the train split, so "
                               "each row would count its own target; evaluate valid or test")
        self.cutoffs()

    def output(self):
        return "--output_dir", self.output_dir or str(Path(self.model_path) / f"eval_{self.split}")

    def check_paths(self) -> None:
        run = RunInfo.read(self.model_path)  # a finished run, checked before the output's lock makes any dir
        check_merge_weights(self.merge_weights, run, self.model_path)
        if self.cf_model:
            check_teacher_dir(self.cf_model)
        if self.output_dir and (Path(self.output_dir) / RUN_FILE).exists():
            raise MinirecError(f"--output_dir {self.output_dir} holds a run (run.json); its metrics.json would be "
                               "overwritten: pass another dir")

    def cutoffs(self) -> tuple[int, ...]:
        try:
            ks = [int(k) for k in self.ks.split(",")]
        except ValueError:
            ks = []
        if not ks or any(k <= 0 for k in ks):
            raise MinirecError(f"--ks {self.ks!r}: give positive integer cut-offs such as 1,3,5,10")
        return tuple(k for k in ks if k <= self.num_beams) or (self.num_beams,)


def evaluate(model_path, **options) -> dict:
    """``main`` for Python callers: keyword arguments are the flags of :class:`EvalConfig`."""
    return main(EvalConfig.checked(model_path=model_path, **options))


def main(config: EvalConfig) -> dict:
    """Evaluate a run on a split with constrained beam search: HR@K, NDCG@K, MRR, a printed table.

    Writes predictions.jsonl, metrics.json and metrics.png; under torchrun the rows are sharded.
    """
    from accelerate import PartialState
    from accelerate.utils import gather_object

    from minirec.modeling.loading import load_trained

    # Under torchrun: the process group (gloo on CPU, NCCL on this rank's GPU); one process otherwise.
    # accelerate counts CPU processes only when told it runs on the CPU (as the Trainer tells it).
    state = PartialState(cpu=process_device().type == "cpu")
    model_path, split, num_beams = config.model_path, config.split, config.num_beams
    ks = config.cutoffs()
    run = RunInfo.read(model_path)  # data problems surface before the model loads
    data = load_dataset(config.data_dir or run.data_dir, splits=(split, "train") if config.repeat_prior else (split,))
    run.check_index(data.catalogue)
    catalogue = data.catalogue
    teacher = load_teacher(config.cf_model, catalogue) if config.cf_model else None
    model, tokenizer, run = load_trained(model_path, trust_remote_code=config.trust_remote_code)
    if config.merge_weights and hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    to_process_device(model)  # this rank's GPU, or the CPU
    rows = data.split(split)[: config.max_rows or None]
    shown = config.max_history or run.max_history
    longest = max((len(r.history) for r in rows), default=0)
    if shown > longest:
        log.warning("--max_history %d: the longest %s history holds %d items, so every prompt shows all of it",
                    shown, split, longest)
    rates = repeat_rates(data.split("train"), catalogue, shown) if config.repeat_prior else None
    trie, cf = build_trie(model, tokenizer, catalogue), None
    if teacher is not None and config.cf_weight:  # W 0: the model alone, exactly
        cf = cf_guidance(teacher, tokenizer, catalogue, trie, config.cf_weight)

    started = time.perf_counter()
    with state.split_between_processes(rows) as mine:  # contiguous shares, in rank order
        histories = [r.history for r in mine]
        ranked = rank_sids(model, tokenizer, catalogue, histories, run.template, shown,
                           num_beams, config.batch_size, trie=trie, progress=state.is_main_process, cf=cf)
        ranked = add_history_items(model, tokenizer, catalogue, histories, ranked, run.template, shown,
                                   config.batch_size, config.repeat_bonus, config.repeat_decay,
                                   config.repeat_prior, rates, cf)  # 0 and 0: unchanged
    ranked = gather_object(ranked)  # every share, in rank order: the rows' order
    if not state.is_main_process:
        return {}
    seconds = time.perf_counter() - started

    records, ranks, top10 = [], [], set()
    for preds, row in zip(ranked, rows, strict=True):
        target = catalogue.sid(row.target)
        sids = [s for s, _ in preds]
        ranks.append(rank_of(sids, target))
        top10.update(sids[:10])
        records.append({"user": row.user, "history": list(row.history), "target": row.target, "target_sid": target,
                        "rank": ranks[-1], "predictions": sids, "scores": [round(s, 4) for _, s in preds]})
    invalid = sum(s not in catalogue.items_by_sid for r in records for s in r["predictions"])
    metrics = {
        **ranking_metrics(ranks, ks),
        **split_metrics_by_repeat(ranks, rows, max_history=shown),  # repeat: target in the prompt
        "invalid_predictions": invalid,
        "coverage@10": len(top10) / len(catalogue.items_by_sid),
        "rows": len(rows), "split": split, "num_beams": num_beams, "model_path": str(model_path), "max_history": shown,
        "repeat_bonus": config.repeat_bonus, "repeat_decay": config.repeat_decay, "repeat_prior": config.repeat_prior,
        **({"repeat_rates": rates.describe()} if rates else {}), "longest_history": longest,
        "cf_weight": config.cf_weight or 0.0, **({"cf_model": teacher.describe()} if teacher else {}),
        "wall_seconds": round(seconds, 2), "seconds_per_1000_rows": round(1000 * seconds / len(rows), 2),
        "processes": state.num_processes,
    }
    out = Path(config.output()[1])
    write_jsonl(out / "predictions.jsonl", records)
    write_json(out / "metrics.json", metrics)
    from minirec.plots import plot_ranking_metrics

    plot_ranking_metrics(metrics, ks, out / "metrics.png")
    print(format_table(metrics, ks))
    print(f"wrote {out}/predictions.jsonl, metrics.json, metrics.png")
    return metrics

