"""RQ-VAE: an MLP autoencoder whose latent is quantized by residual codebooks (TIGER's tokenizer).

Two quantizers share the autoencoder and the training loop of this module:

* :class:`RQVAE` (``--method rqvae``), hand-written (~50 lines of torch). As in TIGER /
  MiniOneRec: codebooks start from k-means on all items' (initial) latent residuals, the loss is
  reconstruction MSE plus, per level, ``||sg[r] - e||^2 + beta * ||r - sg[e]||^2`` with
  commitment beta = 0.25, gradients pass the quantizer with the straight-through estimator, and
  after each epoch a code that no item uses is moved onto a random item's residual at its level
  (without it, training shrinks the latent and many codes go unused).
* ``vector_quantize_pytorch.ResidualVQ`` (``--method rqvae_vqp``, :mod:`minirec.sid.rqvae_vqp`):
  the maintained library's quantizer with k-means init, EMA codebooks, dead-code replacement and
  the same commitment weight. ``bench/sid_index_comparison.py`` builds the index both ways.

Measured in one run of ``bench/sid_index_comparison.py --eval_rows 1500`` (Industrial, MiniLM
embeddings, 3 x 256, seed 42, 300 epochs; then the SFT recipe for 3 epochs on each index, first
1,500 valid rows, beam 50; bench/results/sid_rqvae_comparison.json):

    quantizer       collisions before dedup   perplexity a/b/c   build    valid HR@10 / NDCG@10
    ours (rqvae)    9.50 %                    228 / 209 / 188    92 s     .1027 / .0760
    library (vqp)   11.56 %                   231 / 228 / 211    57 s     .1060 / .0793

The library is as good for ranking (+.0033 HR@10, within noise: SE ~ .008 on 1,500 rows),
spreads items more evenly and builds 1.6x faster; it collides more before deduplication (which
reassigns the colliding items either way). So ``rqvae_vqp`` is the recommended RQ-VAE for new
indices; ours stays because it collides less and reproduces the earlier RQ-VAE experiments
(docs/RESULTS.md) code for code.

Both train full-batch-ish on CPU for a few hundred epochs (seconds to minutes for a few
thousand items), not 10,000. Deterministic for a seed: weights, k-means init and batch order
all derive from it, inside ``torch.random.fork_rng`` so the caller's global RNG state is untouched.
"""

import numpy as np
import torch
from torch import nn

from minirec.sid.quantize import Quantization, _check, _kmeans


def _mlp(sizes):
    layers = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class AutoEncoder(nn.Module):
    """The MLP encoder/decoder around a residual quantizer; subclasses define :meth:`quantize`,
    :meth:`init_codebooks` and :meth:`level_codebooks`."""

    def __init__(self, in_dim: int, hidden=(512, 256, 128), latent_dim: int = 32):
        super().__init__()
        self.encoder = _mlp([in_dim, *hidden, latent_dim])
        self.decoder = _mlp([latent_dim, *reversed(hidden), in_dim])

    def quantize(self, z: torch.Tensor):
        """(quantized latent with gradients to ``z``, codes [n, levels], quantizer loss, last residual)."""
        raise NotImplementedError

    def forward(self, x):
        quantized, codes, rq_loss, _ = self.quantize(self.encoder(x))
        return self.decoder(quantized), codes, rq_loss


class RQVAE(AutoEncoder):
    def __init__(self, in_dim: int, hidden=(512, 256, 128), latent_dim: int = 32, levels: int = 3,
                 codebook_size: int = 256, beta: float = 0.25):
        super().__init__(in_dim, hidden, latent_dim)
        self.codebooks = nn.ParameterList(
            nn.Parameter(torch.zeros(codebook_size, latent_dim)) for _ in range(levels)
        )
        self.beta = beta

    def level_codebooks(self):
        return list(self.codebooks)

    @torch.no_grad()
    def init_codebooks(self, x: torch.Tensor, seed: int) -> None:
        """k-means on the latent residuals of all items, level by level."""
        residual = self.encoder(x).double().numpy()
        for level, codebook in enumerate(self.codebooks):
            centroids, labels = _kmeans(residual, codebook.shape[0], seed + level)
            codebook.copy_(torch.from_numpy(centroids).float())
            residual = residual - centroids[labels]

    @torch.no_grad()
    def restart_dead_codes(self, x: torch.Tensor, gen: torch.Generator) -> int:
        """Move every code that no item uses onto a random item's residual at that level."""
        residual, restarted = self.encoder(x), 0
        for codebook in self.codebooks:
            idx = torch.cdist(residual, codebook).argmin(dim=1)
            dead = torch.nonzero(torch.bincount(idx, minlength=codebook.shape[0]) == 0).flatten()
            if len(dead):
                pick = torch.randint(len(x), (len(dead),), generator=gen)
                codebook[dead] = residual[pick]
                idx = torch.cdist(residual, codebook).argmin(dim=1)
                restarted += len(dead)
            residual = residual - codebook[idx]
        return restarted

    def quantize(self, z: torch.Tensor):
        residual, total, loss, codes = z, torch.zeros_like(z), z.new_zeros(()), []
        for codebook in self.codebooks:
            idx = torch.cdist(residual, codebook).argmin(dim=1)
            chosen = codebook[idx]
            loss = loss + ((residual.detach() - chosen) ** 2).mean() + self.beta * ((residual - chosen.detach()) ** 2).mean()
            codes.append(idx)
            last_residual = residual
            total = total + chosen
            residual = residual - chosen.detach()
        quantized = z + (total - z).detach()  # straight-through estimator
        return quantized, torch.stack(codes, dim=1), loss, last_residual


def train_rqvae(make_model, x, levels: int, codebook_size: int, seed: int, epochs: int, batch_size: int,
                lr: float, restart_dead_codes: bool, info: dict) -> Quantization:
    """Seeded training loop shared by both quantizers: ``make_model(in_dim)`` -> an :class:`AutoEncoder`.

    A model with a ``restart_dead_codes`` method gets it called after every epoch (when asked).
    """
    x_np = _check(x, levels, codebook_size).astype(np.float32)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        data = torch.from_numpy(x_np)
        model = make_model(data.shape[1])
        model.init_codebooks(data, seed)
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
        gen = torch.Generator().manual_seed(seed)
        restart = getattr(model, "restart_dead_codes", None) if restart_dead_codes else None
        history, restarts = [], 0
        for _ in range(epochs):
            model.train()
            sums = np.zeros(2)
            for batch in torch.randperm(len(data), generator=gen).split(batch_size):
                recon, _, rq_loss = model(data[batch])
                recon_loss = ((recon - data[batch]) ** 2).mean()
                opt.zero_grad()
                (recon_loss + rq_loss).backward()
                opt.step()
                sums += [recon_loss.item() * len(batch), rq_loss.item() * len(batch)]
            history.append(sums / len(data))
            if restart:
                restarts += restart(data, gen)
        model.eval()
        with torch.no_grad():
            _, codes, _, last_residual = model.quantize(model.encoder(data))
            last_codebook = model.level_codebooks()[-1].detach().double().numpy()
    info = {
        "epochs": epochs, **info, "lr": lr,
        **({"dead_code_restarts": restarts} if restart else {}),
        "first_epoch_loss": {"recon": float(history[0][0]), "rq": float(history[0][1])} if history else None,
        "last_epoch_loss": {"recon": float(history[-1][0]), "rq": float(history[-1][1])} if history else None,
    }
    return Quantization(codes.numpy().astype(np.int64), last_residual.double().numpy(), last_codebook, info)


def rqvae(x, levels: int = 3, codebook_size: int = 256, seed: int = 42, epochs: int = 300,
          batch_size: int = 1024, lr: float = 1e-3, hidden=(512, 256, 128), latent_dim: int = 32,
          beta: float = 0.25, restart_dead_codes: bool = True) -> Quantization:
    """Train minirec's RQ-VAE on ``x`` [n, d] and return every item's codes (and the last-level state)."""
    return train_rqvae(lambda d: RQVAE(d, tuple(hidden), latent_dim, levels, codebook_size, beta),
                       x, levels, codebook_size, seed, epochs, batch_size, lr, restart_dead_codes,
                       {"quantizer": "minirec", "beta": beta, "latent_dim": latent_dim, "hidden": list(hidden)})
