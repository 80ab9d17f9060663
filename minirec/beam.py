"""Batched constrained beam search over catalogue SIDs: each prompt runs through the model once.

Why hand-written: Hugging Face's beam search copies every prompt ``num_beams`` times before
the first forward pass, so with 50 beams the prompt is encoded 50 times; that expansion is
most of ``generate``'s time for short SIDs. Here the prompts are encoded once, the KV cache
is expanded afterwards (``batch_repeat_interleave``), and each later step feeds one token per
beam. The candidate selection mirrors ``generate(num_beams=K)``: each step takes the top 2K
(beam, token) candidates by summed log-probability; EOS candidates ranked inside the top K
become finished hypotheses, the best K others continue. Scores are the summed raw
log-probabilities (no renormalisation over the allowed tokens, as in ``generate``).

Beams that run out of valid continuations are dropped, never filled: a prompt whose
catalogue allows fewer than K SIDs gets fewer than K results. The trie guarantees that
every returned sequence is a catalogue SID.
"""

from dataclasses import dataclass

import torch

from minirec.constrained import SIDTrie

NEG_INF = float("-inf")


@dataclass
class Beam:
    tokens: tuple  # SID token ids, EOS excluded
    score: float  # summed log-probability, EOS included


def _left_pad(prompts, pad_id, device):
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = torch.tensor(p)
        mask[i, width - len(p):] = 1
    return ids.to(device), mask.to(device)


class _Decoder:
    """Prompts encoded once, KV cache expanded to ``width`` rows per prompt, one token per step."""

    def __init__(self, model, prompts, trie, width, pad_token_id):
        self.model, self.trie, self.pad = model, trie, pad_token_id
        device = next(model.parameters()).device
        ids, mask = _left_pad(prompts, pad_token_id, device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1)
        self.cache = out.past_key_values
        self.cache.batch_repeat_interleave(width)
        self.mask = mask.repeat_interleave(width, dim=0)
        self.next_pos = positions[:, -1:].repeat_interleave(width, dim=0) + 1
        self.logp = out.logits[:, -1].float().log_softmax(-1).repeat_interleave(width, dim=0)  # [B*width, V]
        if self.logp.shape[-1] != trie.vocab_size:
            raise ValueError(f"model vocab {self.logp.shape[-1]} != trie vocab {trie.vocab_size}; "
                             "build the trie with the model's vocab size")
        self.gen = torch.zeros((self.logp.shape[0], 0), dtype=torch.long, device=device)

    def masked_logp(self):
        """Log-probabilities of the next token, -inf outside the catalogue trie."""
        return self.logp.masked_fill(~self.trie.allowed_mask(self.gen), NEG_INF)

    def advance(self, row_idx, tokens):
        """Keep rows ``row_idx`` (reordering the cache; ``None`` keeps every row in place),
        append ``tokens`` [N, 1], run one step."""
        if row_idx is not None:
            self.gen, self.mask = self.gen[row_idx], self.mask[row_idx]
            self.cache.reorder_cache(row_idx)
        self.gen = torch.cat([self.gen, tokens], dim=1)
        self.mask = torch.cat([self.mask, torch.ones_like(tokens)], dim=1)
        out = self.model(input_ids=tokens, attention_mask=self.mask, position_ids=self.next_pos,
                         past_key_values=self.cache, use_cache=True)
        self.cache, self.next_pos = out.past_key_values, self.next_pos + 1
        self.logp = out.logits[:, -1].float().log_softmax(-1)


@torch.no_grad()
def constrained_beam_search(model, prompts, trie: SIDTrie, num_beams: int, pad_token_id: int) -> list[list[Beam]]:
    """Top-``num_beams`` catalogue SIDs for each tokenized prompt, best first."""
    B, K, eos = len(prompts), num_beams, trie.eos_token_id
    dec = _Decoder(model, prompts, trie, K, pad_token_id)
    device, V = dec.logp.device, trie.vocab_size
    scores = torch.full((B, K), NEG_INF, device=device)
    scores[:, 0] = 0.0  # all K beams share the prompt: start from one of them
    finished: list[list[Beam]] = [[] for _ in range(B)]
    rows = torch.arange(B, device=device)[:, None]
    for step in range(trie.max_depth + 1):
        cand = (scores[:, :, None] + dec.masked_logp().view(B, K, V)).view(B, K * V)
        top_scores, top_idx = cand.topk(min(2 * K, K * V), dim=-1)
        origin, token = top_idx // V, top_idx % V
        valid = torch.isfinite(top_scores)
        is_eos = valid & (token == eos)

        rank = torch.arange(top_idx.shape[1], device=device).expand_as(top_idx)
        fb, fj = (is_eos & (rank < K)).nonzero(as_tuple=True)
        if len(fb):
            prefixes = dec.gen[fb * K + origin[fb, fj]].tolist()
            for b, prefix, score in zip(fb.tolist(), prefixes, top_scores[fb, fj].tolist()):
                finished[b].append(Beam(tuple(prefix), score))

        live = valid & ~is_eos
        live_rank = live.long().cumsum(-1) - 1
        keep = live & (live_rank < K)
        order = torch.where(keep, live_rank, K + rank).argsort(dim=-1)[:, :K]
        kept = keep.gather(1, order)
        scores = torch.where(kept, top_scores.gather(1, order), torch.full_like(top_scores[:, :K], NEG_INF))
        if not kept.any() or step == trie.max_depth:
            break
        beam_idx = (rows * K + origin.gather(1, order)).view(-1)
        new_tok = torch.where(kept, token.gather(1, order), torch.full_like(order, pad_token_id)).view(-1, 1)
        dec.advance(beam_idx, new_tok)

    return [sorted(f, key=lambda beam: -beam.score)[:K] for f in finished]


@torch.no_grad()
def constrained_sample(model, prompts, trie: SIDTrie, num_samples: int, pad_token_id: int,
                       temperature: float = 1.0, generator=None) -> list[list[Beam]]:
    """``num_samples`` SIDs per prompt, sampled token by token from the trie-masked distribution
    (softmax at ``temperature``). Duplicates are possible; every sample is a catalogue SID."""
    if temperature <= 0:
        raise ValueError("temperature must be > 0 for sampling; use beam search for deterministic rollouts")
    dec = _Decoder(model, prompts, trie, num_samples, pad_token_id)
    rows = dec.logp.shape[0]
    score = torch.zeros(rows, device=dec.logp.device)
    done = torch.zeros(rows, dtype=torch.bool, device=dec.logp.device)
    for _ in range(trie.max_depth + 1):
        logp = dec.masked_logp()
        probs = torch.softmax(logp / temperature, dim=-1)
        probs[done] = 0.0
        probs[done, pad_token_id] = 1.0
        tok = torch.multinomial(probs, 1, generator=generator)
        score = score + torch.where(done, 0.0, logp.gather(1, tok)[:, 0])
        done = done | (tok[:, 0] == trie.eos_token_id)
        if done.all():
            break
        dec.advance(None, tok)  # samples never change rows: no cache copy
    seqs = [tuple(t for t in row if t not in (trie.eos_token_id, pad_token_id)) for row in dec.gen.tolist()]
    # EOS and the padding after it are stripped; what remains is a complete catalogue SID
    return [[Beam(seqs[b * num_samples + j], float(score[b * num_samples + j])) for j in range(num_samples)]
            for b in range(len(prompts))]
