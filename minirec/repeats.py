"""Repeat purchases at decoding time: the user's own history items join the beam's ranked list.

Some rows re-buy an item the prompt shows (128 of 4,533 Industrial test rows), and "recent
history first" finds nearly all of them, while a beam search can prune such an item. Boosting
every history item by a constant costs more new-row hits than it wins repeat ones, so the
model's own score decides instead:

* :func:`history_scores` scores each distinct SID of the shown history (the last
  ``max_history`` items) by teacher forcing, exactly as the beam would score it: the same
  prompt ids and positions, each step's log-softmax over the whole vocabulary, EOS included
  (:meth:`minirec.beam._Decoder.column_logp`; the trie's mask never touches a catalogue SID's
  own tokens, so it changes nothing here).
* :func:`rerank_with_history` adds those SIDs to the beam's list with their exact scores plus
  ``bonus * decay**age`` (age 0: the most recent item), re-sorts and keeps the list's length.

* The *repeat prior* tells re-buys apart by item: some items are consumables, most are bought
  once. :func:`repeat_rates` counts, over the train rows, how often an item the prompt shows is
  the target (smoothed towards the overall rate). A history SID's score becomes
  ``log(exp(score) + prior * rate)``: a mixture of "the model generates it" and "the user re-buys
  it", so items nobody re-buys are left where the model put them. On Industrial valid (``runs/s42_F``,
  prior 0.5) repeat-row HR@10 rises from .852 to .962 and overall NDCG@10 from .1075 to .1118,
  at the cost of 2 % of the new-row hits; a uniform bonus reached .95 only by losing 10 % of
  them (docs/RESULTS.md, "A re-purchase prior").

``bonus``, ``decay`` and ``prior`` are chosen on valid (``bench/repeat_bonus.py``), never on test.
"""

import math
from collections import Counter
from dataclasses import dataclass

import numpy as np

from minirec.config import only_with
from minirec.errors import MinirecError

# torch and the decoding modules load inside history_scores: the config checks and the rerank (numpy
# only) stay cheap to import (minirec.recommend validates its flags before anything heavy loads).


def check_repeat_options(bonus: float, decay: float, prior: float = 0.0) -> None:
    """The flags' ranges, as one-line errors (evaluate.py and minirec.recommend share them)."""
    if prior < 0:
        raise MinirecError(f"--repeat_prior {prior}: must be >= 0 (0 = off)")
    if bonus < 0:
        raise MinirecError(f"--repeat_bonus {bonus}: must be >= 0 (0 = off)")
    if not 0 < decay <= 1:
        raise MinirecError(f"--repeat_decay {decay}: must be in (0, 1] (1 = every history item the same bonus)")


def check_repeat_flags(config) -> None:
    """:func:`check_repeat_options` on a command's config (evaluate.py, minirec.recommend); there, a
    --repeat_decay typed without --repeat_bonus, which only the bonus uses, is an error too."""
    check_repeat_options(config.repeat_bonus, config.repeat_decay, config.repeat_prior)
    only_with(config, ("repeat_decay",), config.repeat_bonus > 0,
              "with --repeat_bonus B (it scales that bonus per step back in the history)")


def history_sids(history, catalogue, max_history) -> list[str]:
    """SIDs of the history as the prompt shows it (its last ``max_history`` items), oldest first."""
    shown = history[-max_history:] if max_history else history
    return [catalogue.sid(item) for item in shown]


@dataclass(frozen=True)
class RepeatRates:
    """Per SID, the smoothed share of train rows showing it whose target it is (:func:`repeat_rates`)."""

    rates: dict
    base: float  # the pooled rate: what a SID never shown in a train prompt gets
    rows: int = 0  # train rows counted

    def __call__(self, sid: str) -> float:
        return self.rates.get(sid, self.base)

    def describe(self) -> dict:
        return {"train_rows": self.rows, "sids_seen": len(self.rates), "pooled_rate": round(self.base, 5)}


def repeat_rates(rows, catalogue, max_history, smoothing=1.0) -> RepeatRates:
    """Re-purchase rate of each SID over ``rows`` (train rows): (times it is the target of a row
    whose shown history holds it + ``smoothing`` x pooled rate) / (rows showing it + ``smoothing``).

    SIDs, not item ids: the ranking is scored by SID, so buying another item of the same SID counts.
    A SID no train prompt shows gets the pooled rate: on valid it matched the alternatives (the mean
    of the per-SID rates, or 0) on Industrial and did better than 0 on Office, whose partial train
    split leaves a tenth of the shown SIDs unseen (docs/RESULTS.md, "A re-purchase prior")."""
    shown, repeated = Counter(), Counter()
    for row in rows:
        target = catalogue.sid(row.target)
        for sid in set(history_sids(row.history, catalogue, max_history)):
            shown[sid] += 1
            repeated[sid] += sid == target
    base = sum(repeated.values()) / max(sum(shown.values()), 1)
    rates = {s: (repeated[s] + smoothing * base) / (n + smoothing) for s, n in shown.items()}
    return RepeatRates(rates, base, len(rows))


def history_scores(model, tokenizer, catalogue, histories, template="compact", max_history=10,
                   batch_size=16) -> list[dict[str, float]]:
    """For each history: {SID: the beam's score of that SID} over the shown history's distinct SIDs."""
    wanted = [list(dict.fromkeys(history_sids(h, catalogue, max_history))) for h in histories]
    return sid_scores(model, tokenizer, catalogue, histories, wanted, template, max_history, batch_size)


def sid_scores(model, tokenizer, catalogue, histories, wanted, template="compact", max_history=10,
               batch_size=16) -> list[dict[str, float]]:
    """For each history: {SID: the beam's score of that SID} over its ``wanted`` SIDs (a list per row).

    ``batch_size`` prompts go through the model together, each with one sequence per wanted
    SID (prompt + SID); fewer when their [SID tokens + EOS] x vocabulary log-probabilities would
    exceed the beam's per-tensor cap.
    """
    from minirec.beam import default_max_rows
    from minirec.decoding import model_vocab_size
    from minirec.prompts import next_sid_prompt
    from minirec.tokenization import encode_prompts

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    prompts = encode_prompts(tokenizer, [next_sid_prompt(h, catalogue, template, max_history) for h in histories])
    tokens = {}  # SID string -> token ids, as SIDTrie.from_catalogue maps them
    for sids in wanted:
        for sid in sids:
            item = catalogue.items_by_sid[sid][0]
            tokens.setdefault(sid, tokenizer.convert_tokens_to_ids(list(catalogue.sids[item])))
    depth = max((len(t) for t in tokens.values()), default=0)
    cap = default_max_rows(model_vocab_size(model) * (depth + 1), 1)  # the beam's per-tensor cap
    order = sorted(range(len(histories)), key=lambda i: len(prompts[i]))  # little padding, as rank_sids
    results: list[dict[str, float]] = [{} for _ in histories]
    try:
        for start in range(0, len(order), batch_size):
            pairs = [(i, sid) for i in order[start : start + batch_size] for sid in wanted[i]]
            for at in range(0, len(pairs), cap):
                part = pairs[at : at + cap]
                scores = _teacher_forced(model, [prompts[i] for i, _ in part], [tokens[s] for _, s in part],
                                         tokenizer.eos_token_id, tokenizer.pad_token_id, device)
                for (i, sid), score in zip(part, scores):
                    results[i][sid] = score
    finally:
        model.train(was_training)
    return results


def _teacher_forced(model, prompts, completions, eos, pad, device) -> list[float]:
    """Summed log-probability of each completion + EOS after its prompt, in one forward pass.

    Left padding and positions counted from each prompt's first token, as the beam's prompt
    pass; the logits of the last ``len(completion) + 1`` positions predict the completion and EOS.
    """
    import torch

    from minirec.beam import _left_pad  # the beam's own padding: the same ids and mask
    targets = [list(c) + [eos] for c in completions]
    keep = max(map(len, targets))
    ids, mask = _left_pad([p + list(c) for p, c in zip(prompts, completions)], pad, device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False,
                       logits_to_keep=keep).logits[:, -keep:]
        logp = logits.float().log_softmax(-1)  # as column_logp: fp32, over the whole vocabulary
    index = torch.full((len(targets), keep), eos, dtype=torch.long)
    counted = torch.zeros((len(targets), keep), dtype=torch.bool)
    for j, t in enumerate(targets):  # right-aligned: a shorter SID leaves its first columns out
        index[j, keep - len(t):] = torch.tensor(t)
        counted[j, keep - len(t):] = True
    picked = logp.gather(-1, index.to(device)[..., None])[..., 0]
    return picked.masked_fill(~counted.to(device), 0.0).sum(-1).tolist()


def rerank_with_history(ranked, hist_scores, histories, bonus, decay=1.0, prior=0.0,
                        rates=None, teacher_scores=None) -> list[list[tuple[str, float]]]:
    """The beam's lists with each row's history SIDs added, their scores raised.

    ``ranked``: per row, the beam's (SID, score) pairs, best first. ``hist_scores``: per row,
    {SID: exact score} (:func:`history_scores`). ``histories``: per row, the shown history's SIDs,
    oldest first (:func:`history_sids`); a SID's age is its most recent position from the end.
    A history SID's score becomes ``log(exp(score) + prior * rates(sid)) + teacher + bonus * decay**age``,
    where ``teacher`` is its ``teacher_scores`` entry (CF-guided decoding's W x log p_CF(SID); 0 without).
    The prior mixes with the model's own probability, as it was chosen, before the teacher's term.
    A history SID the beam also found takes its exact score (the same up to float rounding).
    Each list is re-sorted, best first (ties keep the beam's order), and cut to its length.
    ``bonus`` and ``prior`` 0 return the beam's lists unchanged.
    """
    check_repeat_options(bonus, decay, prior)
    if bonus == 0 and prior == 0:
        return [list(row) for row in ranked]
    if prior and rates is None:
        raise ValueError("a repeat prior needs the train split's repeat rates (repeat_rates)")
    out = []
    teacher_scores = teacher_scores or [{}] * len(ranked)
    for row, exact, history, teacher in zip(ranked, hist_scores, histories, teacher_scores, strict=True):
        age = {}
        for a, sid in enumerate(reversed(history)):
            age.setdefault(sid, a)
        scores = dict(row)
        for sid, score in exact.items():
            if sid not in age:
                raise ValueError(f"{sid} has a history score but is not in the row's history")
            weight = prior * rates(sid) if prior else 0.0
            if weight > 0:
                score = float(np.logaddexp(score, math.log(weight)))
            scores[sid] = score + teacher.get(sid, 0.0) + bonus * decay ** age[sid]
        out.append(sorted(scores.items(), key=lambda kv: -kv[1])[: len(row)])
    return out


def add_history_items(model, tokenizer, catalogue, histories, ranked, template, max_history, batch_size,
                      bonus, decay=1.0, prior=0.0, rates=None, cf=None) -> list[list[tuple[str, float]]]:
    """:func:`history_scores` then :func:`rerank_with_history`: what evaluate.py and recommend call.
    ``cf`` (CF-guided decoding's :class:`minirec.teacher.PrefixScores`): a history SID's score gets
    the teacher's weighted log-probability after the prior, as the fused beam adds it to its SIDs.
    (Adding it before the prior mixed a fused score with a prior chosen against the model's own
    probabilities: on Industrial valid every shown item then outranked new ones, NDCG@10 .1201 ->
    .1099; docs/RESULTS.md.)"""
    if bonus == 0 and prior == 0:
        return [list(row) for row in ranked]
    exact = history_scores(model, tokenizer, catalogue, histories, template, max_history, batch_size)
    shown = [history_sids(h, catalogue, max_history) for h in histories]
    teacher = cf.sid_scores(histories, catalogue, [list(dict.fromkeys(s)) for s in shown]) if cf else None
    return rerank_with_history(ranked, exact, shown, bonus, decay, prior, rates, teacher)
