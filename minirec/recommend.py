"""Recommend the next items for a history, from the command line.

    python -m minirec.recommend --model_path out/sft_full --history "<a_1><b_2><c_3>,<a_4><b_5><c_6>" --top_k 10
    python -m minirec.recommend --model_path out/sft_full --history 117,118
    python -m minirec.recommend --model_path out/sft_full --interactive True

History entries may be SIDs, item ids or exact titles (case-insensitive), separated by
``--sep`` (default ","; use "|" when titles contain commas). Unknown entries are an error.
"""

import sys
from dataclasses import dataclass

from minirec.config import Config
from minirec.errors import MinirecError
from minirec.repeats import add_history_items, check_repeat_flags, repeat_rates
from minirec.run_info import RunInfo, check_merge_weights


def resolve_history(history, catalogue, sep=",") -> list[str]:
    """History entries (SIDs, item ids or titles) -> item ids, oldest first."""
    if isinstance(history, (list, tuple)):
        entries = [str(h).strip() for h in history]
    else:
        entries = [h.strip() for h in str(history).split(sep)]
    entries = [e for e in entries if e]
    if not entries:
        raise MinirecError("--history is empty; give SIDs, item ids or titles separated by ','")
    by_title = {t.lower(): i for i, t in catalogue.titles.items()}
    items, unknown = [], []
    for entry in entries:
        if entry in catalogue:
            items.append(entry)
        elif entry in catalogue.items_by_sid:
            items.append(catalogue.items_by_sid[entry][0])
        elif entry.lower() in by_title:
            items.append(by_title[entry.lower()])
        else:
            unknown.append(entry)
    if unknown:
        raise MinirecError(
            f"--history: {len(unknown)} unknown item(s): {', '.join(repr(u[:60]) for u in unknown[:3])}; "
            "use catalogue SIDs, item ids or exact titles (and --sep '|' if titles contain commas)"
        )
    return items


def format_recommendations(recs, catalogue) -> str:
    lines = []
    for rank, (sid, score) in enumerate(recs, 1):
        for item in catalogue.items_by_sid[sid]:
            title = catalogue.titles.get(item, "")
            lines.append(f"{rank:>3}. {sid}  item {item:<6} score {score:8.3f}  {title[:80]}")
    return "\n".join(lines)


@dataclass
class RecommendConfig(Config):
    model_path: str
    """A finished run dir (it holds run.json)."""
    history: str = ""
    """Past items, oldest first: catalogue SIDs, item ids or exact titles, separated by --sep."""
    top_k: int = 10
    """How many recommendations to print."""
    num_beams: int = 0
    """Beam width of the constrained search (0 = --top_k); wider beams can change the top of the list."""
    repeat_bonus: float = 0.0
    """Add the history's items (its last max_history, as the prompt shows them) to the list with their
    exact model score plus this bonus (times --repeat_decay per step back); 0 = off. Choose it on
    valid with bench/repeat_bonus.py."""
    repeat_decay: float = 1.0
    """In (0, 1]: the bonus of a history item k steps back from the most recent is bonus * decay**k."""
    repeat_prior: float = 0.0
    """Add the history's items with score log(exp(model score) + this x the item's re-purchase rate
    in the train split of --data_dir (default: the run's dataset dir)); 0 = off. See evaluate.py."""
    cf_model: str = ""
    """A collaborative teacher (a python -m minirec.baselines sasrec output dir on this run's catalogue)
    fused into every beam step with weight --cf_weight; see evaluate.py."""
    cf_weight: float | None = None
    """W of --cf_model, >= 0 (0 = the model alone); choose it on valid with bench/cf_weight.py."""
    sep: str = ","
    """Separator of --history entries; use "|" when titles contain commas."""
    merge_weights: bool = False
    """Merge an adapter into its base first (faster decoding)."""
    interactive: bool = False
    """Read one history per line from stdin instead of --history; an empty line ends."""
    data_dir: str = ""
    """Dataset dir for the catalogue; default: the run's own copy (older runs: the recorded dataset dir)."""
    trust_remote_code: bool = False
    """Allow the checkpoint's own modelling code to run."""

    def validate(self) -> None:
        if self.top_k <= 0 or self.num_beams < 0:
            raise MinirecError(f"--top_k must be positive and --num_beams >= 0, got {self.top_k} and {self.num_beams}")
        if 0 < self.num_beams < self.top_k:
            raise MinirecError(f"--num_beams {self.num_beams} yields fewer than --top_k {self.top_k} items; "
                               "raise it or leave it at 0")
        if not self.sep:
            raise MinirecError("--sep is empty; use , or |")
        check_repeat_flags(self)
        if self.cf_model or self.cf_weight is not None:  # torch loads only for these flags
            from minirec.teacher import check_cf_options

            check_cf_options(self.cf_model, self.cf_weight)
        if self.interactive and self.history:
            raise MinirecError("--history and --interactive True exclude each other; give one")
        if not self.interactive and not self.history.strip():
            raise MinirecError('pass --history "<a_1><b_2><c_3>,..." or --interactive True')


def main(config: RecommendConfig) -> None:
    """Recommend the next items for a history (SIDs, item ids or titles), best first, with titles."""
    from minirec.data import load_dataset

    run = RunInfo.read(config.model_path)
    check_merge_weights(config.merge_weights, run, config.model_path)
    catalogue = load_dataset(config.data_dir or run.catalogue_dir(config.model_path), splits=()).catalogue
    run.check_index(catalogue)
    rates = None
    if config.repeat_prior:  # from the train split, before the model loads
        train = load_dataset(config.data_dir or run.data_dir, splits=("train",))
        run.check_index(train.catalogue)
        rates = repeat_rates(train.split("train"), train.catalogue, run.max_history)
    history, top_k, sep = config.history, config.top_k, config.sep
    if not config.interactive:
        resolve_history(history, catalogue, sep)  # a typo is reported before the model loads
    teacher = None
    if config.cf_model:
        from minirec.teacher import load_teacher

        teacher = load_teacher(config.cf_model, catalogue)
    from minirec.decoding import build_trie, cf_guidance, rank_sids
    from minirec.distributed import to_process_device
    from minirec.modeling.loading import load_trained

    model, tokenizer, run = load_trained(config.model_path, trust_remote_code=config.trust_remote_code)
    if config.merge_weights and hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    to_process_device(model)  # this rank's GPU, or the CPU
    trie = build_trie(model, tokenizer, catalogue)
    cf = cf_guidance(teacher, tokenizer, catalogue, trie, config.cf_weight) if teacher and config.cf_weight else None

    def answer(hist):
        items = [tuple(resolve_history(hist, catalogue, sep))]
        recs = rank_sids(model, tokenizer, catalogue, items, run.template, run.max_history,
                         num_beams=config.num_beams or top_k, batch_size=1, trie=trie, progress=False, cf=cf)
        recs = add_history_items(model, tokenizer, catalogue, items, recs, run.template, run.max_history, 1,
                                 config.repeat_bonus, config.repeat_decay, config.repeat_prior,
                                 rates, cf)[0]  # bonus and prior 0: unchanged
        return format_recommendations(recs[:top_k], catalogue)

    if not config.interactive:
        print(answer(history))
        return
    print(f"history ({sep!r}-separated SIDs, item ids or titles); empty line to quit", file=sys.stderr)
    for line in sys.stdin:
        if not line.strip():
            break
        try:
            print(answer(line.strip()), flush=True)
        except MinirecError as e:  # a typo should not end the session
            print(f"error: {e}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    from minirec.cli import Command, run

    run(Command("-m minirec.recommend", RecommendConfig, main))
