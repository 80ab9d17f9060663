"""Distillation of a collaborative teacher into SFT: soft targets at every SID token.

``sft.py --cf_model DIR --cf_distill A`` (a saved SASRec, :mod:`minirec.teacher`) trains on

    loss = (1 - A) x cross-entropy(next token) + A x soft cross-entropy,

where the soft term, at each SID token of each target, is ``-sum_c q(c) log p_model(c)`` over
the tokens ``c`` the catalogue allows after the target's true prefix, and ``q(c)`` is the
teacher's probability of the prefix + ``c`` given the prefix (the items under each child of the
prefix's trie node, from the target's history only). EOS positions keep the hard target alone.
Both terms are sums over label tokens divided by the same count (the Trainer's
``num_items_in_batch`` when it gives one), so gradient accumulation scales them alike.

The teacher reads, for each target, the items before it (at most its ``max_len``): an interaction
row's history, or in a dense row the context and the row's earlier targets, as the model sees them.
"""

import torch

from minirec.errors import MinirecError
from minirec.teacher import PrefixScores, group_logsumexp

IGNORE_INDEX = -100


def target_histories(rows_or_sequences, dense: bool, max_history: int) -> list[list[tuple[str, ...]]]:
    """Per training row, the item history of each of its targets, in label order.

    Dense: the ``(items, first_target)`` sequences as :func:`minirec.prompts.build_sequence_examples`
    cuts them (same loop, so row k here is its row k); else one target per interaction row."""
    if not dense:
        return [[tuple(row.history)] for row in rows_or_sequences]
    out = []
    for items, first_target in rows_or_sequences:
        for start in range(first_target, len(items), max_history):
            out.append([tuple(items[:start + k]) for k in range(len(items[start:start + max_history]))])
    return out


class DistillCollator:
    """A collator, then :meth:`Distiller.collate` on rows that carry teacher histories (train rows)."""

    def __init__(self, base, distiller):
        self.base, self.distiller = base, distiller

    def __call__(self, batch):
        collated = self.base(batch)
        return self.distiller.collate(batch, collated) if "cf_history" in batch[0] else collated


class Distiller:
    """The teacher, the trie and the SID token ids the soft targets need; one per SFT run."""

    def __init__(self, teacher, catalogue, trie, sid_token_ids, weight: float):
        if not 0 < weight < 1:
            raise MinirecError(f"--cf_distill {weight}: must be in (0, 1) (the soft targets' share of the loss)")
        self.teacher, self.trie, self.weight = teacher, trie, weight
        self.max_len = teacher.config.max_len
        # the (item, prefix node) pairs and the prefix -> node map, as CF-guided decoding lays them out
        prefixes = PrefixScores(teacher, catalogue, trie, sid_token_ids, 1.0)
        self.prefix_node, (self.cols, self.nodes) = prefixes.prefix_node, prefixes.sub
        self.sid_tokens = set(int(t) for t in trie.local_tokens)

    def encode_histories(self, histories) -> list[list[int]]:
        """Each target's history as the teacher's item ids (its last ``max_len``): a dataset column."""
        return [[[self.teacher.ids[i] for i in h[-self.max_len:]] for h in row] for row in histories]

    def collate(self, batch, collated: dict) -> dict:
        """Adds the teacher's inputs and each SID label position to a collated batch."""
        hist, where = [], []  # where: (row, label position, target index, prefix node)
        for b, example in enumerate(batch):
            targets, labels = example["cf_history"], example["labels"]
            k, prefix = 0, ()
            for t, tok in enumerate(labels):
                if tok == IGNORE_INDEX:
                    continue
                if tok in self.sid_tokens and k < len(targets):
                    where.append((b, t, len(hist) + k, self.prefix_node[prefix]))
                    prefix += (tok,)
                else:  # EOS ends a target
                    k, prefix = k + 1, ()
            hist += targets
            if k != len(targets):
                raise ValueError(f"row {b}: {k} SID targets in its labels, {len(targets)} teacher histories")
        inputs = torch.zeros((max(len(hist), 1), self.max_len), dtype=torch.long)
        for r, h in enumerate(hist):
            inputs[r, : len(h)] = torch.tensor(h, dtype=torch.long)
        collated["cf_inputs"], collated["cf_last"] = inputs, torch.tensor([max(len(h), 1) - 1 for h in hist] or [0])
        collated["cf_where"] = torch.tensor(where, dtype=torch.long).view(-1, 4)
        return collated

    def soft_loss_sum(self, logits, cf_inputs, cf_last, cf_where) -> torch.Tensor:
        """Summed soft cross-entropy over the batch's SID label positions."""
        device = logits.device
        model = self.teacher.model.to(device)
        with torch.no_grad():
            hidden = model(cf_inputs.to(device))[torch.arange(len(cf_inputs), device=device), cf_last.to(device)]
            subtree = group_logsumexp(model.scores(hidden).float().log_softmax(-1), self.cols.to(device),
                                      self.nodes.to(device), self.trie.num_nodes + 2)
            b, t, target, node = cf_where.cpu().unbind(1)  # the trie lives on the CPU (the Trainer moved the batch)
            tokens = self.trie.local_tokens
            child = self.trie.step(node[:, None].expand(-1, len(tokens)), tokens.expand(len(node), -1)).to(device)
            b, t, target, tokens = b.to(device), t.to(device), target.to(device), tokens.to(device)
            real = child < self.trie.num_nodes
            scores = subtree[target[:, None], child.clamp(max=self.trie.num_nodes + 1)]
            q = torch.where(real, scores, torch.full_like(scores, float("-inf"))).softmax(-1)
        logp = logits[b, t - 1].float().log_softmax(-1)[:, tokens]  # logits at t - 1 predict label t
        return -(q * logp.masked_fill(~real, 0.0)).sum()
