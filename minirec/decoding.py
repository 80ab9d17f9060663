"""Decoding that every stage shares: SID tries for a model, constrained beam ranking and greedy decoding.

SFT's checkpoint selection, RL's rollouts and valid evaluation, ``evaluate.py`` and
``minirec.recommend`` all decode through these functions, so each sees the same ranked lists.
"""

import torch
from tqdm.auto import tqdm

from minirec.beam import constrained_beam_search
from minirec.constrained import SIDConstraint, SIDTrie
from minirec.prompts import next_sid_prompt
from minirec.tokenization import encode_prompts


def model_vocab_size(model) -> int:
    return model.get_output_embeddings().weight.shape[0]


def decode_sid(tokenizer, token_ids) -> str:
    """Generated ids -> SID string, stopping at EOS (special tokens dropped)."""
    out = []
    for tok in tokenizer.convert_ids_to_tokens(list(token_ids)):
        if tok in (tokenizer.eos_token, tokenizer.pad_token):
            break
        out.append(tok)
    return "".join(out)


def build_trie(model, tokenizer, catalogue) -> SIDTrie:
    device = next(model.parameters()).device
    return SIDTrie.from_catalogue(catalogue, tokenizer, model_vocab_size(model)).to(device)


def cf_guidance(teacher, tokenizer, catalogue, trie, weight: float):
    """A :class:`minirec.teacher.PrefixScores` for ``rank_sids(cf=...)``: the teacher on the trie's device."""
    from minirec.teacher import PrefixScores

    teacher.to(trie.edge_keys.device)
    return PrefixScores(teacher, catalogue, trie, sid_token_ids(tokenizer, catalogue), weight)


def sid_token_ids(tokenizer, catalogue):
    """SID string -> its token ids, as :meth:`SIDTrie.from_catalogue` maps a SID."""
    return lambda sid: tokenizer.convert_tokens_to_ids(list(catalogue.sids[catalogue.items_by_sid[sid][0]]))


@torch.no_grad()
def rank_sids(model, tokenizer, catalogue, histories, template="compact", max_history=10,
              num_beams=50, batch_size=16, trie=None, progress=True, cf=None):
    """For each history: up to ``num_beams`` (SID string, score) pairs, best first.

    Prompts are batched in order of length, so a batch encodes and attends to little padding.
    Each row is decoded independently, so the batching does not change any result.
    ``cf``: a :class:`minirec.teacher.PrefixScores` built on ``trie`` (CF-guided decoding: the
    teacher scores each history, all of it, and its weighted prefix scores join every step).
    """
    trie = trie or build_trie(model, tokenizer, catalogue)
    was_training = model.training
    model.eval()
    prompts = encode_prompts(tokenizer, [next_sid_prompt(h, catalogue, template, max_history) for h in histories])
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    results = [None] * len(prompts)
    try:
        for start in tqdm(range(0, len(order), batch_size), desc=f"beam search (K={num_beams})",
                          disable=not progress):
            chunk = order[start : start + batch_size]
            tables = None if cf is None else (lambda s, e, c=chunk: cf.tables([histories[i] for i in c[s:e]]))
            beams = constrained_beam_search(model, [prompts[i] for i in chunk], trie, num_beams,
                                            tokenizer.pad_token_id, prefix_scores=tables)
            for i, row in zip(chunk, beams):
                results[i] = [(decode_sid(tokenizer, b.tokens), b.score) for b in row]
    finally:
        model.train(was_training)
    return results


@torch.no_grad()
def greedy_next_sid(model, tokenizer, catalogue, rows, template="compact", max_history=10, batch_size=64, trie=None):
    """Constrained greedy decoding (HF ``generate`` + :class:`SIDConstraint`) -> (accuracy, predictions)."""
    trie = trie or build_trie(model, tokenizer, catalogue)
    was_training = model.training
    model.eval()
    padding_side, tokenizer.padding_side = tokenizer.padding_side, "left"
    predictions = []
    try:
        for start in tqdm(range(0, len(rows), batch_size), desc="greedy next-SID", leave=False):
            batch = rows[start : start + batch_size]
            ids = encode_prompts(tokenizer, [next_sid_prompt(r.history, catalogue, template, max_history) for r in batch])
            enc = tokenizer.pad({"input_ids": ids}, return_tensors="pt").to(trie.edge_keys.device)
            width = enc["input_ids"].shape[1]
            out = model.generate(
                **enc, max_new_tokens=trie.max_depth + 1, do_sample=False, num_beams=1,
                logits_processor=[SIDConstraint(trie, width)],
                pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
            )
            predictions += [decode_sid(tokenizer, seq[width:]) for seq in out]
    finally:
        tokenizer.padding_side = padding_side
        model.train(was_training)
    hits = sum(p == catalogue.sid(r.target) for p, r in zip(predictions, rows))
    return hits / max(len(rows), 1), predictions
