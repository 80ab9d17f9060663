"""The RQ-VAE of :mod:`minirec.sid.rqvae` with ``vector_quantize_pytorch.ResidualVQ`` as its quantizer.

Same MLP encoder/decoder, levels, codebook size, seed, epochs, batches and optimizer as
``--method rqvae``; the library supplies the quantizer: k-means init of every level (run once on
all items' latents before training, so it sees the whole catalogue as minirec's init does),
codebooks learned by EMA (decay 0.8, the library's default) instead of a codebook loss, dead codes
(EMA cluster size below ``threshold_ema_dead_code``) replaced by residuals of the current batch,
and the commitment loss ``beta * ||r - sg[e]||^2`` per level with minirec's beta = 0.25.
``rotation_trick=False`` keeps the straight-through estimator that minirec's RQ-VAE (and TIGER)
use, so the two differ only in how the codebooks learn. The library's residual STE passes the
reconstruction gradient to the latent once per level (minirec's once in all); that is its design.
"""

import torch
from vector_quantize_pytorch import ResidualVQ

from minirec.sid.quantize import Quantization
from minirec.sid.rqvae import AutoEncoder, train_rqvae


class VQPRQVAE(AutoEncoder):
    def __init__(self, in_dim: int, hidden=(512, 256, 128), latent_dim: int = 32, levels: int = 3,
                 codebook_size: int = 256, beta: float = 0.25, threshold_ema_dead_code: float = 2.0,
                 kmeans_iters: int = 10):
        super().__init__(in_dim, hidden, latent_dim)
        self.rvq = ResidualVQ(dim=latent_dim, num_quantizers=levels, codebook_size=codebook_size,
                              kmeans_init=True, kmeans_iters=kmeans_iters,
                              threshold_ema_dead_code=threshold_ema_dead_code,
                              commitment_weight=beta, rotation_trick=False)

    def level_codebooks(self):
        return list(self.rvq.codebooks)

    @torch.no_grad()
    def init_codebooks(self, x: torch.Tensor, seed: int) -> None:
        """One training-mode pass over all items: the library's k-means init runs on the whole catalogue
        (its sampling draws from the torch RNG that :func:`train_rqvae` seeded)."""
        self.rvq.train()
        self.rvq(self.encoder(x))

    def quantize(self, z: torch.Tensor):
        quantized, codes, losses = self.rvq(z)
        books = self.level_codebooks()
        last_residual = z.detach().clone()
        for level in range(len(books) - 1):
            last_residual -= books[level][codes[:, level]]
        return quantized, codes, losses.sum(), last_residual


def rqvae_vqp(x, levels: int = 3, codebook_size: int = 256, seed: int = 42, epochs: int = 300,
              batch_size: int = 1024, lr: float = 1e-3, hidden=(512, 256, 128), latent_dim: int = 32,
              beta: float = 0.25, threshold_ema_dead_code: float = 2.0) -> Quantization:
    """Train the RQ-VAE with the library's ResidualVQ on ``x`` [n, d]; the arguments of :func:`rqvae`."""
    return train_rqvae(lambda d: VQPRQVAE(d, tuple(hidden), latent_dim, levels, codebook_size, beta,
                                          threshold_ema_dead_code),
                       x, levels, codebook_size, seed, epochs, batch_size, lr, False,
                       {"quantizer": "vector_quantize_pytorch.ResidualVQ", "beta": beta,
                        "threshold_ema_dead_code": threshold_ema_dead_code, "latent_dim": latent_dim,
                        "hidden": list(hidden)})
