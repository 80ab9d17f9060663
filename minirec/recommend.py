"""Recommend the next items for a history, from the command line.

    python -m minirec.recommend --model_path out/sft_full --history "<a_1><b_2><c_3>,<a_4><b_5><c_6>" --top_k 10
    python -m minirec.recommend --model_path out/sft_full --history 117,118
    python -m minirec.recommend --model_path out/sft_full --interactive True

History entries may be SIDs, item ids or exact titles (case-insensitive), separated by
``--sep`` (default ","; use "|" when titles contain commas). Unknown entries are an error.
"""

import sys

from minirec.cli import run_cli
from minirec.errors import MinirecError


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


def recommend(model_path: str, history="", top_k: int = 10, num_beams: int = 0, sep: str = ",",
              merge_weights: bool = False, interactive: bool = False, data_dir: str = "",
              trust_remote_code: bool = False):
    from minirec.data import load_dataset
    from minirec.evaluate import build_trie, rank_sids
    from minirec.modeling.loading import load_trained

    if top_k <= 0:
        raise MinirecError(f"--top_k must be positive, got {top_k}")
    if not interactive and not history:
        raise MinirecError("pass --history \"<a_1><b_2><c_3>,...\" or --interactive True")
    model, tokenizer, run = load_trained(model_path, trust_remote_code=trust_remote_code)
    if merge_weights and hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    catalogue = load_dataset(data_dir or run.data_dir, splits=()).catalogue
    run.check_index(catalogue)
    trie = build_trie(model, tokenizer, catalogue)

    def answer(hist):
        items = resolve_history(hist, catalogue, sep)
        recs = rank_sids(model, tokenizer, catalogue, [tuple(items)], run.template, run.max_history,
                         num_beams=max(num_beams, top_k), batch_size=1, trie=trie, progress=False)[0]
        return format_recommendations(recs[:top_k], catalogue)

    if not interactive:
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
    run_cli(recommend)
