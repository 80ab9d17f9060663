"""The RQ-VAE on vector-quantize-pytorch's ResidualVQ: valid codes, seeded, consistent last level."""

import numpy as np
import torch

from minirec.sid.build import BuildConfig
from minirec.sid.rqvae_vqp import VQPRQVAE, rqvae_vqp

SMALL = {"levels": 3, "codebook_size": 16, "epochs": 8, "batch_size": 128, "hidden": (32,), "latent_dim": 8}


def vectors(n=300, dim=24, seed=0):
    return np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)


def test_codes_are_valid_seeded_and_leave_the_global_rng_alone():
    x = vectors()
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = rqvae_vqp(x, seed=5, **SMALL)
    assert torch.rand(1) == before  # fork_rng: the caller's RNG stream is unchanged
    b = rqvae_vqp(x, seed=5, **SMALL)
    c = rqvae_vqp(x, seed=6, **SMALL)
    assert a.codes.shape == (300, 3) and a.codes.dtype == np.int64 and 0 <= a.codes.min() and a.codes.max() < 16
    assert np.array_equal(a.codes, b.codes) and np.array_equal(a.last_codebook, b.last_codebook)
    assert not np.array_equal(a.codes, c.codes)
    assert len(np.unique(a.codes[:, 0])) > 8  # k-means init and dead-code replacement spread the items
    assert a.info["quantizer"] == "vector_quantize_pytorch.ResidualVQ" and a.info["beta"] == 0.25
    assert a.info["last_epoch_loss"]["recon"] < a.info["first_epoch_loss"]["recon"]


def test_last_level_state_matches_the_codes():
    q = rqvae_vqp(vectors(), seed=1, **SMALL)
    assert q.last_residual.shape == (300, 8) and q.last_codebook.shape == (16, 8)
    nearest = ((q.last_residual[:, None, :] - q.last_codebook[None]) ** 2).sum(-1).argmin(1)
    assert (nearest == q.codes[:, -1]).mean() > 0.99  # collisions move items by this geometry


def test_kmeans_init_sees_all_items_and_gradients_reach_the_encoder():
    torch.manual_seed(0)
    model = VQPRQVAE(6, hidden=(8,), latent_dim=4, levels=2, codebook_size=4)
    x = torch.randn(64, 6)
    model.init_codebooks(x, seed=0)
    assert all(layer._codebook.initted for layer in model.rvq.layers)
    assert all(book.abs().sum() > 0 for book in model.level_codebooks())
    recon, codes, rq_loss = model(x)
    (((recon - x) ** 2).mean() + rq_loss).backward()
    assert model.encoder[0].weight.grad.abs().sum() > 0 and codes.shape == (64, 2)


def test_rqvae_epochs_is_a_flag_of_both_rqvae_methods():
    flags = {"items": "i.json", "out": "o.json", "rqvae_epochs": 5}
    assert BuildConfig.from_kwargs(**flags, method="rqvae_vqp").rqvae_epochs == 5
