"""SASRec (Kang & McAuley, 2018) on item ids: its config, the model, and its input tensors.

A causal self-attention encoder over the user's last ``max_len`` items with learned
positions; the hidden state at the last item scores every catalogue item by a dot product
with the (tied) item embeddings, trained with full-softmax cross-entropy over all items
(no negative sampling). Training and early stopping are in ``minirec.baselines.sasrec_train``.

Why a small implementation and not RecBole 1.2.1 (the maintained SASRec): checked with
``pip download --no-deps recbole==1.2.1`` and by reading the wheel, not installing it. Its
METADATA has no ``numpy<2`` pin (numpy, torch and pandas are lower bounds only) but pins
``ray<=2.6.3``, ``colorlog==4.7.2`` and ``colorama==0.4.4``; and its code breaks on ours
(numpy 2.4.6, torch 2.13): ``recbole/evaluator/metrics.py`` uses ``np.float`` (removed in
NumPy 1.24) in MRR and MAP, and ``Trainer.evaluate(load_best_model=True)`` calls
``torch.load`` without ``weights_only=False`` on a checkpoint that pickles RecBole's
``Config`` object, which torch >= 2.6 refuses by default. It also scores item ids, while
minirec scores SIDs with collision groups counted once.

Training examples: the rows of ``train.inter`` only (valid/test targets never enter
training; the valid split only picks the epoch). Each train row ``history -> target`` is one
loss term with the history as context, exactly once. Rows of one user that extend each other
(``history + [target]`` is the next row's history, as in the first ``max_len`` rows of a
user) share one left-aligned sequence with a label at every position: the same loss terms
as one forward pass per row, at a fraction of the cost (Industrial: 8,943 sequences for
36,259 rows).
"""

import math
from dataclasses import dataclass

import torch
from torch import nn

from minirec.errors import MinirecError
from minirec.config import Config

IGNORE = -100  # label of positions without a loss term (F.cross_entropy's ignore_index)


@dataclass
class SASRecConfig(Config):
    # --- data -------------------------------------------------------------------------
    data_dir: str = "data/Industrial_and_Scientific"
    """Dataset dir: index.json and train/valid/test as .inter or .csv."""
    split: str = "valid,test"
    """Held-out split(s) to report with the restored best model, comma-separated."""
    output_dir: str = "out/baselines/sasrec"
    """Where metrics.json, the best weights (model.safetensors) and teacher.json go: the dir that
    evaluate.py --cf_model and rl.py --cf_model load as a collaborative teacher."""
    max_train_rows: int = 0
    """Train on the first N train rows only (0 = all); for smoke runs."""
    max_eval_rows: int = 0
    """Score only the first N valid/test rows (0 = all); for smoke runs."""

    # --- model ------------------------------------------------------------------------
    max_len: int = 10
    """Most recent history items the model sees (the splits hold at most 10)."""
    hidden_size: int = 64
    """Width of the item/position embeddings and of every layer."""
    num_layers: int = 2
    """Self-attention blocks."""
    num_heads: int = 2
    """Attention heads per block; must divide hidden_size."""
    inner_size: int = 256
    """Width of each block's feed-forward layer."""
    dropout: float = 0.3
    """Dropout on the embeddings, attention weights and feed-forward outputs."""

    # --- optimisation -----------------------------------------------------------------
    batch_size: int = 128
    """Training sequences per AdamW step (Industrial: ~70 steps per epoch)."""
    learning_rate: float = 1e-3
    """AdamW learning rate (constant)."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    max_epochs: int = 200
    """Upper bound on epochs; early stopping normally ends training well before."""
    patience: int = 5
    """Stop after this many epochs without a better valid HR@10 + NDCG@10; the best epoch's
    weights are restored."""
    seed: int = 42
    """Seed for the weights, the data order and dropout."""
    num_threads: int = 0
    """torch.set_num_threads(N) when > 0; 0 keeps torch's default (one per core). On a CPU
    shared with other jobs, 1 avoids thread contention: with load ~5 on 2 cores a step took
    ~70 ms on 1 thread and ~1 s on the default 2."""

    # --- evaluation -------------------------------------------------------------------
    top_k: int = 50
    """Distinct SIDs ranked per row (the LLM's beam width)."""
    eval_batch_size: int = 1024
    """Rows per forward pass when ranking valid/test."""

    def validate(self) -> None:
        for name in ("max_len", "hidden_size", "num_layers", "num_heads", "inner_size", "batch_size",
                     "max_epochs", "patience", "top_k", "eval_batch_size"):
            if getattr(self, name) <= 0:
                raise MinirecError(f"--{name} must be positive, got {getattr(self, name)}")
        if self.hidden_size % self.num_heads:
            raise MinirecError(f"--hidden_size {self.hidden_size} is not a multiple of --num_heads {self.num_heads}")
        if not 0 <= self.dropout < 1 or self.learning_rate <= 0 or self.weight_decay < 0:
            raise MinirecError("--dropout must be in [0, 1), --learning_rate > 0 and --weight_decay >= 0")
        if min(self.max_train_rows, self.max_eval_rows, self.num_threads) < 0:
            raise MinirecError("--max_train_rows, --max_eval_rows and --num_threads must be >= 0 (0 = all / default)")

    def output(self):
        return "--output_dir", self.output_dir


class SASRec(nn.Module):
    """Item sequences (ids 1..num_items, 0 = padding *after* the last item) -> hidden states.

    Padding only ever follows the real items, so under the causal mask no real position
    attends to a pad and no key-padding mask is needed.
    """

    def __init__(self, num_items: int, config: SASRecConfig):
        super().__init__()
        d = config.hidden_size
        self.item_emb = nn.Embedding(num_items + 1, d, padding_idx=0)
        self.pos_emb = nn.Embedding(config.max_len, d)
        self.drop = nn.Dropout(config.dropout)
        block = nn.TransformerEncoderLayer(d, config.num_heads, config.inner_size, config.dropout,
                                           activation="gelu", batch_first=True, norm_first=True)
        # pre-norm blocks then a final norm: stable without warm-up at this size
        self.blocks = nn.TransformerEncoder(block, config.num_layers, norm=nn.LayerNorm(d),
                                            enable_nested_tensor=False)
        self.register_buffer("causal", nn.Transformer.generate_square_subsequent_mask(config.max_len),
                             persistent=False)
        nn.init.normal_(self.item_emb.weight, std=0.02)
        nn.init.normal_(self.pos_emb.weight, std=0.02)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        t = items.shape[1]
        x = self.item_emb(items) * math.sqrt(self.item_emb.embedding_dim) + self.pos_emb.weight[:t]
        return self.blocks(self.drop(x), mask=self.causal[:t, :t], is_causal=True)

    def scores(self, hidden: torch.Tensor) -> torch.Tensor:
        """Hidden states [..., d] -> logits over every catalogue item [..., num_items]
        (column j is item id j + 1; the padding row is never a candidate)."""
        return hidden @ self.item_emb.weight[1:].T


def item_index(catalogue) -> dict[str, int]:
    """Item id -> model id 1..N, in catalogue order (0 is padding)."""
    return {item: i for i, item in enumerate(catalogue.sids, 1)}


def training_examples(rows, ids: dict[str, int], max_len: int):
    """``(inputs, labels)``, both ``[S, max_len]`` long tensors, from train rows only.

    Each row contributes one label, at the position of its last history item, with its own
    ``history[-max_len:]`` as context. A row whose history equals the user's open sequence
    extends it by its target instead of starting a new one (see the module docstring).
    """
    sequences = []  # [item ids, number of labelled last positions]
    open_by_user = {}
    for row in rows:
        history = [ids[i] for i in row.history[-max_len:]]
        seq = open_by_user.get(row.user)
        if seq is not None and seq[0] == history:
            seq[0] = history + [ids[row.target]]
            seq[1] += 1
        else:
            seq = [history + [ids[row.target]], 1]
            sequences.append(seq)
            open_by_user[row.user] = seq
    inputs = torch.zeros(len(sequences), max_len, dtype=torch.long)
    labels = torch.full((len(sequences), max_len), IGNORE, dtype=torch.long)
    for s, (items, n) in enumerate(sequences):
        length = len(items) - 1
        inputs[s, :length] = torch.tensor(items[:-1])
        labels[s, length - n : length] = torch.tensor(items[-n:]) - 1  # class j = item id j + 1
    return inputs, labels


def history_batch(histories, ids: dict[str, int], max_len: int):
    """Left-aligned ``[B, max_len]`` inputs and the index of each row's last item."""
    inputs = torch.zeros(len(histories), max_len, dtype=torch.long)
    last = torch.empty(len(histories), dtype=torch.long)
    for r, history in enumerate(histories):
        items = [ids[i] for i in history[-max_len:]]
        inputs[r, : len(items)] = torch.tensor(items)
        last[r] = len(items) - 1
    return inputs, last
