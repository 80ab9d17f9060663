"""Decoding that can only emit catalogue SIDs.

Why hand-written: Hugging Face's ``prefix_allowed_tokens_fn`` calls back into Python once
per row and beam per step. :class:`SIDTrie` instead walks every row's generated suffix at
once with ``torch.searchsorted`` over a sorted edge table and returns a boolean mask of
allowed next tokens for the whole batch, so the cost per step is a few tensor ops whatever
the batch x beam size. It knows nothing about metrics or training; evaluation and RL
rollouts share it.

States: every trie node is a state; ``DONE`` is the state after EOS (only EOS/pad
allowed, so finished rows stay finished); ``DEAD`` is any prefix outside the catalogue,
which allows nothing: a row there can only carry a score of -inf, never a SID.
"""

import torch
from transformers import LogitsProcessor


class SIDTrie:
    def __init__(self, sequences, eos_token_id: int, vocab_size: int, pad_token_id=None):
        """``sequences``: token-id lists, one per distinct catalogue SID (any depth)."""
        sequences = [tuple(s) for s in sequences]
        if not sequences or any(len(s) == 0 for s in sequences):
            raise ValueError("SIDTrie needs at least one non-empty SID")
        self.eos_token_id = eos_token_id
        self.vocab_size = vocab_size
        self.max_depth = max(len(s) for s in sequences)
        used = sorted({t for s in sequences for t in s})
        to_local = torch.full((vocab_size,), -1, dtype=torch.long)
        to_local[torch.tensor(used)] = torch.arange(len(used))
        self.to_local, self.local_tokens, width = to_local, torch.tensor(used), len(used)

        children: list[dict] = [{}]
        terminal = [False]
        for seq in sequences:
            node = 0
            for tok in seq:
                nxt = children[node].get(tok)
                if nxt is None:
                    nxt = len(children)
                    children[node][tok] = nxt
                    children.append({})
                    terminal.append(False)
                node = nxt
            terminal[node] = True
        self.num_nodes = len(children)
        self.DONE, self.DEAD = self.num_nodes, self.num_nodes + 1

        keys, child = [], []
        for node, edges in enumerate(children):
            for tok, nxt in edges.items():
                keys.append(node * width + int(to_local[tok]))
                child.append(nxt)
        order = torch.tensor(keys).argsort()
        self.edge_keys = torch.tensor(keys)[order]
        self.edge_child = torch.tensor(child)[order]
        self.width = width

        # allowed[state] over local tokens, plus a separate "EOS allowed" column per state.
        self.allowed_local = torch.zeros((self.num_nodes + 2, width), dtype=torch.bool)
        self.allows_eos = torch.zeros(self.num_nodes + 2, dtype=torch.bool)
        for node, edges in enumerate(children):
            for tok in edges:
                self.allowed_local[node, to_local[tok]] = True
            self.allows_eos[node] = terminal[node]
        self.allows_eos[self.DONE] = True
        self.pad_token_id = pad_token_id
        # The only tokens a SID continuation can be: the SID tokens, then EOS (beam search
        # ranks candidates over these columns instead of the whole vocabulary).
        self.columns = torch.cat([self.local_tokens, torch.tensor([eos_token_id])])

    @classmethod
    def from_catalogue(cls, catalogue, tokenizer, vocab_size=None):
        seqs = [tokenizer.convert_tokens_to_ids(list(catalogue.sids[items[0]])) for items in catalogue.items_by_sid.values()]
        return cls(seqs, tokenizer.eos_token_id, vocab_size or len(tokenizer), tokenizer.pad_token_id)

    def to(self, device):
        for name in ("to_local", "local_tokens", "edge_keys", "edge_child", "allowed_local", "allows_eos", "columns"):
            setattr(self, name, getattr(self, name).to(device))
        return self

    def states(self, generated: torch.Tensor) -> torch.Tensor:
        """Trie state of each row after its generated tokens ``[B, t]`` -> ``[B]``."""
        state = torch.zeros(generated.shape[0], dtype=torch.long, device=generated.device)
        for j in range(generated.shape[1]):
            state = self.step(state, generated[:, j])
        return state

    def step(self, state: torch.Tensor, tok: torch.Tensor) -> torch.Tensor:
        """The state after token ``tok`` in state ``state`` (elementwise, any shape)."""
        local = self.to_local[tok.clamp(0, self.vocab_size - 1)]
        key = state * self.width + local
        idx = torch.searchsorted(self.edge_keys, key.contiguous()).clamp(max=len(self.edge_keys) - 1)
        found = (self.edge_keys[idx] == key) & (local >= 0) & (state < self.num_nodes)
        is_eos = tok == self.eos_token_id
        ended = (is_eos & self.allows_eos[state]) | ((state == self.DONE) & (is_eos | (tok == self.pad_token_id)))
        return torch.where(found, self.edge_child[idx], torch.where(ended, self.DONE, self.DEAD))

    def node_path(self, tokens) -> list[int]:
        """The nodes a SID's token ids pass through, after each token (the last ends the SID)."""
        state, path = torch.zeros(1, dtype=torch.long, device=self.edge_keys.device), []
        for tok in tokens:
            state = self.step(state, torch.tensor([tok], device=state.device))
            if int(state) >= self.num_nodes:
                raise ValueError(f"token ids {list(tokens)} are not a SID of this trie")
            path.append(int(state))
        if not bool(self.allows_eos[path[-1]]):
            raise ValueError(f"token ids {list(tokens)} are a prefix, not a SID, of this trie")
        return path

    def allowed_mask(self, generated: torch.Tensor) -> torch.Tensor:
        """Boolean ``[B, vocab]``: which tokens may come next for each row."""
        state = self.states(generated)
        mask = torch.zeros((generated.shape[0], self.vocab_size), dtype=torch.bool, device=generated.device)
        mask[:, self.local_tokens] = self.allowed_local[state]
        mask[:, self.eos_token_id] |= self.allows_eos[state]
        return mask

    def allowed_columns(self, generated: torch.Tensor) -> torch.Tensor:
        """Boolean ``[B, len(columns)]``: :meth:`allowed_mask` restricted to ``columns``."""
        state = self.states(generated)
        return torch.cat([self.allowed_local.index_select(0, state), self.allows_eos[state, None]], dim=1)

    def sequences(self) -> list[tuple[int, ...]]:
        """Every SID in the trie as token ids (for tests and reachability checks)."""
        out, stack = [], [(0, ())]
        key_nodes = (self.edge_keys // self.width).tolist()
        key_toks = self.local_tokens[self.edge_keys % self.width].tolist()
        edges: dict[int, list] = {}
        for n, t, c in zip(key_nodes, key_toks, self.edge_child.tolist()):
            edges.setdefault(n, []).append((t, c))
        while stack:
            node, prefix = stack.pop()
            if self.allows_eos[node]:
                out.append(prefix)
            stack.extend((c, prefix + (t,)) for t, c in edges.get(node, []))
        return out


class SIDConstraint(LogitsProcessor):
    """A ``generate`` LogitsProcessor: tokens outside the catalogue trie get -inf.

    ``prompt_len`` is the (left-padded) prompt width, so generated tokens are
    ``input_ids[:, prompt_len:]``.
    """

    def __init__(self, trie: SIDTrie, prompt_len: int):
        self.trie, self.prompt_len = trie, prompt_len

    def __call__(self, input_ids, scores):
        if scores.shape[1] != self.trie.vocab_size:
            raise ValueError(f"logits width {scores.shape[1]} != trie vocab {self.trie.vocab_size}; build the trie with the model's vocab size")
        mask = self.trie.allowed_mask(input_ids[:, self.prompt_len:])
        return scores.masked_fill(~mask, float("-inf"))
