"""SID token rows that start from the items' text (``sft.py --sid_init text``).

A SID token is a residual-quantization code: ``<a_12>`` stands for the items whose first code is
12, ``<b_7>`` for what is left of an item's embedding after its first code is taken away, and so
on. So each token's row starts at the mean *residual* of the items that carry it, level by level
(the first level's rows are the mean text embedding of their items; the next level's are the mean
of what the first left over), whatever index built the SIDs. The rows are then mapped to the
model's width by a fixed random Gaussian projection (any width; it keeps distances roughly when
the width is not much below the embedding's) and, level by level, centred and scaled to the
spread of a fresh row (``initializer_range``), so only their directions carry text. The output
rows (tied, or an untied LM head's) start there too: items with similar text start with similar
logits. A level with a single token gets a zero row (nothing to tell apart).
"""

import numpy as np
import torch

from minirec.errors import MinirecError
from minirec.modeling.loading import _sid_matrices, gathered


def text_rows(catalogue, embeddings: dict, tokens, width: int, std: float, seed: int = 0) -> torch.Tensor:
    """One row per token of ``tokens`` (the catalogue's SID tokens), [len(tokens), width].

    ``embeddings``: item id -> text embedding (``minirec.sid.text.load_item_embeddings`` reads them)."""
    items = list(catalogue.sids)
    missing = [i for i in items if i not in embeddings]
    if missing:
        raise MinirecError(f"--item_embeddings has no row for {len(missing)} catalogue items (e.g. {missing[0]})")
    residual = np.stack([embeddings[i] for i in items]).astype(np.float64)
    rows, level_of = {}, {}
    for level in range(max(len(catalogue.sids[i]) for i in items)):
        at = np.array([k for k, i in enumerate(items) if len(catalogue.sids[i]) > level])
        names, group = np.unique([catalogue.sids[items[k]][level] for k in at], return_inverse=True)
        sums = np.zeros((len(names), residual.shape[1]))
        np.add.at(sums, group, residual[at])
        means = sums / np.bincount(group)[:, None]
        rows.update(zip(names.tolist(), means))
        level_of.update((name, level) for name in names.tolist())
        residual[at] -= means[group]
    unknown = [t for t in tokens if t not in rows]
    if unknown:
        raise MinirecError(f"SID token {unknown[0]} is on no catalogue item; the index and the tokens disagree")
    projection = np.random.default_rng(seed).standard_normal((residual.shape[1], width))
    projected = np.stack([rows[t] for t in tokens]) @ projection
    levels = np.array([level_of[t] for t in tokens])
    for level in set(levels.tolist()):  # deeper residuals are smaller: each level gets a fresh row's spread
        part = projected[levels == level] - projected[levels == level].mean(0)
        projected[levels == level] = part * (std / max(part.std(), 1e-12))
    return torch.from_numpy(projected).float()


@torch.no_grad()
def init_text_rows(model, token_ids, tokens, catalogue, embeddings: dict, seed: int = 0) -> None:
    """Set the SID rows (``token_ids``, one per token of ``tokens``) of the input embedding, and of
    an untied LM head, to :func:`text_rows`."""
    std = getattr(model.config, "initializer_range", 0.02)
    by_width = {}  # an untied head of the same width gets the same rows, computed once
    with gathered(_sid_matrices(model)):  # whole under ZeRO-3 (rank 0's rows are kept)
        for w in _sid_matrices(model):
            if w.shape[1] not in by_width:
                by_width[w.shape[1]] = text_rows(catalogue, embeddings, tokens, w.shape[1], std, seed)
            w[torch.as_tensor(list(token_ids), device=w.device)] = by_width[w.shape[1]].to(w.device, w.dtype)
