"""Batched constrained beam search over catalogue SIDs: each prompt runs through the model once.

Why hand-written: Hugging Face's beam search copies every prompt ``num_beams`` times before
the first forward pass, so with 50 beams the prompt is encoded 50 times. Here the prompts are
encoded once and every beam attends to its prompt's single copy of the KV cache
(:class:`_SharedPrefixDecoder`). The candidate selection mirrors ``generate(num_beams=K)``:
each step takes the top 2K (beam, token) candidates by summed log-probability; EOS candidates
ranked inside the top K become finished hypotheses, the best K others continue. Scores are the
summed raw log-probabilities (no renormalisation over the allowed tokens, as in ``generate``).

Beams that run out of valid continuations are dropped, never filled: a prompt whose
catalogue allows fewer than K SIDs gets fewer than K results. The trie guarantees that
every returned sequence is a catalogue SID.

Memory: a call decodes at most ``max_rows`` (prompt x beam) rows at a time, in chunks of whole
prompts; every row is decoded independently, so chunks change scores only by float rounding
(different padding). The default (:func:`default_max_rows`) bounds the [rows x vocab] fp32
score tensors a step holds.
"""

from dataclasses import dataclass

import torch

from minirec.constrained import SIDTrie

NEG_INF = float("-inf")
# One fp32 [rows x vocab] tensor may take this much; a step's peak is about two of them, the
# logits and their log-softmax (bench/beam_memory.py: ~490 MiB at any prompt count, 152k vocab).
ROW_TENSOR_BYTES = 256 * 2**20
SHARED_PREFIX_ATTENTION = ("sdpa", "eager")  # attention implementations that take a custom 4D mask


@dataclass
class Beam:
    tokens: tuple  # SID token ids, EOS excluded
    score: float  # summed log-probability, EOS included


def default_max_rows(vocab_size: int, width: int) -> int:
    """Rows (prompts x beams) per decoding call: 256 MiB per fp32 [rows x vocab] tensor, so
    ~440 rows at Qwen2.5's 152k vocabulary, ~67k at the tiny model's 1k; never under one prompt."""
    return max(width, ROW_TENSOR_BYTES // (4 * vocab_size))


def _left_pad(prompts, pad_id, device):
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = torch.tensor(p)
        mask[i, width - len(p):] = 1
    return ids.to(device), mask.to(device)


class _Decoder:
    """Shared state of both decoders: ``logits`` [rows, V] of the next token after ``gen`` [rows, t]."""

    def _encode(self, model, prompts, trie, pad_token_id):
        self.model, self.trie, self.pad = model, trie, pad_token_id
        self.device = next(model.parameters()).device
        ids, mask = _left_pad(prompts, pad_token_id, self.device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1)
        if out.logits.shape[-1] != trie.vocab_size:
            raise ValueError(f"model vocab {out.logits.shape[-1]} != trie vocab {trie.vocab_size}; "
                             "build the trie with the model's vocab size")
        self.cache, self.next_pos = out.past_key_values, positions[:, -1:] + 1
        return out.logits[:, -1], mask

    def column_logp(self):
        """[rows, C] log-probabilities of the trie's columns (SID tokens, then EOS), -inf where the
        trie forbids them; normalised over the whole vocabulary, as ``generate`` scores. Only
        the logits and their log-softmax span the vocabulary (what the memory cap bounds).
        ``index_select``: 4x faster than indexing with ``[:, columns]`` on CPU."""
        logp = self.logits.float().log_softmax(-1).index_select(1, self.trie.columns)
        return logp.masked_fill_(~self.trie.allowed_columns(self.gen), NEG_INF)


class _ExpandedDecoder(_Decoder):
    """The KV cache copied to ``width`` rows per prompt, extended and reordered every step.

    The fallback for attention implementations that take no custom 4D mask (flash-attention),
    and the "before" of bench/constrained_decoding.py. Its first ``logits`` already have ``width``
    rows per prompt."""

    def __init__(self, model, prompts, trie, width, pad_token_id):
        logits, mask = self._encode(model, prompts, trie, pad_token_id)
        self.cache.batch_repeat_interleave(width)
        self.mask = mask.repeat_interleave(width, dim=0)
        self.next_pos = self.next_pos.repeat_interleave(width, dim=0)
        self.logits = logits.repeat_interleave(width, dim=0)
        self.gen = torch.zeros((self.logits.shape[0], 0), dtype=torch.long, device=self.device)

    def advance(self, row_idx, tokens):
        """Keep rows ``row_idx`` (reordering the cache; ``None`` keeps every row in place),
        append ``tokens`` [N, 1], run one step."""
        if row_idx is not None:
            self.gen, self.mask, self.next_pos = self.gen[row_idx], self.mask[row_idx], self.next_pos[row_idx]
            self.cache.reorder_cache(row_idx)
        self.gen = torch.cat([self.gen, tokens], dim=1)
        self.mask = torch.cat([self.mask, torch.ones_like(tokens)], dim=1)
        out = self.model(input_ids=tokens, attention_mask=self.mask, position_ids=self.next_pos,
                         past_key_values=self.cache, use_cache=True)
        self.cache, self.next_pos = out.past_key_values, self.next_pos + 1
        self.logits = out.logits[:, -1]


class _SharedPrefixDecoder(_Decoder):
    """One cache row per prompt; each step appends one token per beam to that row, and a 4D
    attention mask lets a beam's token see the prompt and its own ancestors' tokens only.

    So the prompt's keys and values are never copied per beam, and a beam that changes parent
    changes which earlier slots its mask opens, not the cache. Against :class:`_ExpandedDecoder`
    (copy to K rows, concatenate and reorder each step): 33.5 -> 15.7 CPU s per 1,000 rows, the
    same rankings (tiny default, beam 50, all 4,533 Industrial test rows, one thread;
    bench/constrained_decoding.py); what is left is mostly the linear layers. The cost is
    attention over K x t generated slots instead of t (~7 % of the time there), small next to
    the prompt copies it saves when SIDs are a few tokens long. Only public interfaces: a 4D mask
    (boolean for SDPA, additive for eager attention), explicit position ids, a ``DynamicCache``.
    The mask replaces the model's own, so a sliding window (none in Qwen2.5 or Llama) is not
    applied; prompts here are far shorter than any window."""

    def __init__(self, model, prompts, trie, width, pad_token_id):
        self.logits, self.prompt_mask = self._encode(model, prompts, trie, pad_token_id)  # one row per prompt
        self.prompt_mask = self.prompt_mask.bool()
        self.eager = model.config._attn_implementation == "eager"
        self.gen = torch.zeros((len(prompts), 0), dtype=torch.long, device=self.device)
        self.slots = torch.zeros_like(self.gen)  # cache positions of each row's generated tokens

    def advance(self, row_idx, tokens):
        """Rows ``row_idx`` continue (each row's parent; ``None``: the same rows), each with one
        token of ``tokens`` [N, 1]; run one step. N is a multiple of the number of prompts."""
        if row_idx is not None:
            self.gen, self.slots = self.gen[row_idx], self.slots[row_idx]
        B, t = self.prompt_mask.shape[0], self.gen.shape[1]
        width = tokens.shape[0] // B
        past = self.cache.get_seq_length()
        new_slots = torch.arange(past, past + width, device=self.device).repeat(B)[:, None]
        self.gen, self.slots = torch.cat([self.gen, tokens], 1), torch.cat([self.slots, new_slots], 1)
        visible = torch.zeros((B * width, past + width), dtype=torch.bool, device=self.device)
        visible[:, : self.prompt_mask.shape[1]] = self.prompt_mask.repeat_interleave(width, dim=0)
        visible.scatter_(1, self.slots, True)
        mask = visible.view(B, 1, width, past + width)
        if self.eager:  # eager attention adds the mask to its scores
            mask = torch.zeros(mask.shape, device=self.device).masked_fill_(~mask, torch.finfo(torch.float32).min)
        out = self.model(input_ids=tokens.view(B, width), attention_mask=mask,
                         position_ids=(self.next_pos + t).expand(B, width), past_key_values=self.cache, use_cache=True)
        self.cache = out.past_key_values
        self.logits = out.logits.view(B * width, -1)


def _decoder_for(model):
    if getattr(model.config, "_attn_implementation", None) in SHARED_PREFIX_ATTENTION:
        return _SharedPrefixDecoder
    return _ExpandedDecoder


def _in_chunks(decode, prompts, width, vocab_size, max_rows):
    """``decode(chunk, start)`` over whole-prompt chunks of at most ``max_rows`` rows (prompts x
    ``width``); ``start`` is the chunk's first prompt index."""
    per_call = max(1, (max_rows or default_max_rows(vocab_size, width)) // width)
    return [row for start in range(0, len(prompts), per_call)
            for row in decode(prompts[start : start + per_call], start)]


@torch.no_grad()
def constrained_beam_search(model, prompts, trie: SIDTrie, num_beams: int, pad_token_id: int,
                            max_rows: int | None = None, prefix_scores=None) -> list[list[Beam]]:
    """Top-``num_beams`` catalogue SIDs for each tokenized prompt, best first.
    ``max_rows``: prompts x beams decoded at once (default :func:`default_max_rows`).

    ``prefix_scores(start, end)`` (optional) -> ``(subtree, terminal)``, each [end - start, nodes + 2]:
    a score per trie node for prompts[start:end] (:class:`minirec.teacher.PrefixScores`). A
    candidate prefix then ranks by its summed log-probability plus its node's ``subtree`` score
    (an ending SID: its ``terminal`` score), at every step, so the beam keeps prefixes the
    model alone would prune; a finished SID's score is that sum. None: the model alone."""
    def decode(chunk, start):
        bonus = prefix_scores(start, start + len(chunk)) if prefix_scores is not None else None
        return _beam_search(model, chunk, trie, num_beams, pad_token_id, bonus)

    return _in_chunks(decode, prompts, num_beams, trie.vocab_size, max_rows)


def _node_bonus(trie, logp, gen, tables, n):
    """[rows, C]: each allowed candidate's node score (``tables``' subtree score of the child it
    reaches; for EOS, the terminal score of the row's node); 0 where the trie forbids it."""
    subtree, terminal = tables
    rows, cols = torch.isfinite(logp).nonzero(as_tuple=True)
    state = trie.states(gen)[rows]
    prompt = rows // n
    eos = cols == len(trie.columns) - 1
    child = trie.step(state, trie.columns[cols])
    node_score = torch.where(eos, terminal[prompt, state], subtree[prompt, child])
    return torch.zeros_like(logp).index_put_((rows, cols), node_score)


def _beam_search(model, prompts, trie, K, pad_token_id, tables=None):
    B, eos, C = len(prompts), trie.eos_token_id, len(trie.columns)
    dec = _decoder_for(model)(model, prompts, trie, K, pad_token_id)
    device = dec.logits.device
    scores = torch.full((B, dec.logits.shape[0] // B), NEG_INF, device=device)
    scores[:, 0] = 0.0  # every beam of a prompt starts from the prompt: search from one of them
    finished: list[list[Beam]] = [[] for _ in range(B)]
    rows = torch.arange(B, device=device)[:, None]
    for step in range(trie.max_depth + 1):
        n = scores.shape[1]  # beams per prompt now: at most K (one at first, shared-prefix decoder)
        logp = dec.column_logp()
        cand = logp.view(B, n, C).add_(scores[:, :, None]).view(B, n * C)  # the model's summed log-probability
        if tables is None:
            ranked = cand
        else:  # the prefix's node score joins the ranking; the model's own sum is what a beam carries on
            ranked = cand + _node_bonus(trie, logp, dec.gen, tables, n).view(B, n * C)
        top_ranked, top_idx = ranked.topk(min(2 * K, n * C), dim=-1)
        top_scores = cand.gather(1, top_idx) if tables is not None else top_ranked
        origin, token = top_idx // C, trie.columns[top_idx % C]
        valid = torch.isfinite(top_ranked)
        is_eos = valid & (token == eos)

        rank = torch.arange(top_idx.shape[1], device=device).expand_as(top_idx)
        fb, fj = (is_eos & (rank < K)).nonzero(as_tuple=True)
        if len(fb):
            prefixes = dec.gen[fb * n + origin[fb, fj]].tolist()
            for b, prefix, score in zip(fb.tolist(), prefixes, top_ranked[fb, fj].tolist()):
                finished[b].append(Beam(tuple(prefix), score))

        live = valid & ~is_eos
        live_rank = live.long().cumsum(-1) - 1
        keep = live & (live_rank < K)
        width = int(keep.sum(-1).max())  # beams that continue, at most K: no row for a dead one
        if width == 0 or step == trie.max_depth:
            break
        order = torch.where(keep, live_rank, K + rank).argsort(dim=-1)[:, :width]  # kept first
        kept = keep.gather(1, order)
        scores = torch.where(kept, top_scores.gather(1, order), torch.full_like(top_scores[:, :width], NEG_INF))
        beam_idx = (rows * n + origin.gather(1, order)).view(-1)
        new_tok = torch.where(kept, token.gather(1, order), torch.full_like(order, pad_token_id)).view(-1, 1)
        dec.advance(beam_idx, new_tok)

    return [sorted(f, key=lambda beam: -beam.score)[:K] for f in finished]


@torch.no_grad()
def constrained_sample(model, prompts, trie: SIDTrie, num_samples: int, pad_token_id: int,
                       temperature: float = 1.0, generator=None, max_rows: int | None = None) -> list[list[Beam]]:
    """``num_samples`` SIDs per prompt, sampled token by token from the trie-masked distribution
    (softmax at ``temperature``). Duplicates are possible; every sample is a catalogue SID.
    ``max_rows`` as in :func:`constrained_beam_search`."""
    if temperature <= 0:
        raise ValueError("temperature must be > 0 for sampling; use beam search for deterministic rollouts")
    return _in_chunks(lambda chunk, _: _sample(model, chunk, trie, num_samples, pad_token_id, temperature, generator),
                      prompts, num_samples, trie.vocab_size, max_rows)


def _sample(model, prompts, trie, num_samples, pad_token_id, temperature, generator):
    dec = _decoder_for(model)(model, prompts, trie, num_samples, pad_token_id)
    rows, device = len(prompts) * num_samples, dec.logits.device
    fan_out = torch.arange(len(prompts), device=device).repeat_interleave(num_samples)
    score = torch.zeros(rows, device=device)
    done = torch.zeros(rows, dtype=torch.bool, device=device)
    for _ in range(trie.max_depth + 1):
        logp = dec.column_logp()
        if logp.shape[0] < rows:  # the shared-prefix decoder's first step: one row per prompt
            logp = logp[fan_out]
        col = torch.multinomial(torch.softmax(logp / temperature, dim=-1), 1, generator=generator)
        tok = torch.where(done[:, None], pad_token_id, trie.columns[col])  # finished rows pad
        score = score + torch.where(done, 0.0, logp.gather(1, col)[:, 0])
        done = done | (tok[:, 0] == trie.eos_token_id)
        if done.all():
            break
        # samples never change rows (no cache copy); only a first step fans prompts out to samples
        dec.advance(fan_out if dec.gen.shape[0] < rows else None, tok)
    seqs = [tuple(t for t in row if t not in (trie.eos_token_id, pad_token_id)) for row in dec.gen.tolist()]
    # EOS and the padding after it are stripped; what remains is a complete catalogue SID
    return [[Beam(seqs[b * num_samples + j], float(score[b * num_samples + j])) for j in range(num_samples)]
            for b in range(len(prompts))]
