"""Quantizers on small synthetic embeddings: shapes, determinism, balance, code statistics."""

import numpy as np
import pytest
import torch

from minirec.sid.quantize import balanced_assign, level_stats, rqkmeans, rqkmeans_balanced, sinkhorn, sq_distances
from minirec.sid.rqvae import RQVAE, rqvae


def clustered(n=240, dim=12, clusters=6, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(clusters, dim)) * 3
    return (centers[rng.integers(0, clusters, n)] + rng.normal(size=(n, dim))).astype(np.float32)


@pytest.mark.parametrize("method", [rqkmeans, rqkmeans_balanced])
def test_residual_kmeans_is_deterministic_and_in_range(method):
    x = clustered()
    a, b = method(x, levels=3, codebook_size=8, seed=3), method(x, levels=3, codebook_size=8, seed=3)
    assert a.codes.shape == (240, 3) and a.codes.min() >= 0 and a.codes.max() < 8
    assert np.array_equal(a.codes, b.codes)
    assert a.last_residual.shape == (240, 12) and a.last_codebook.shape == (8, 12)


def test_rqkmeans_first_level_recovers_well_separated_clusters():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 4, 200)
    x = np.eye(4)[labels] * 50 + rng.normal(size=(200, 4))
    codes = rqkmeans(x, levels=2, codebook_size=4, seed=0).codes[:, 0]
    # a bijection between true clusters and level-a codes
    assert len({(l, c) for l, c in zip(labels, codes)}) == 4


def test_residuals_shrink_level_by_level():
    x = clustered()
    q = rqkmeans(x, levels=3, codebook_size=8, seed=0)
    assert (q.last_residual ** 2).sum() < ((x - x.mean(0)) ** 2).sum() * 0.5


@pytest.mark.parametrize("n, k", [(240, 8), (250, 8), (101, 10), (64, 64)])
def test_balanced_levels_hold_floor_or_ceil_items_per_code(n, k):
    q = rqkmeans_balanced(clustered(n), levels=3, codebook_size=k, seed=0)
    for level in range(3):
        sizes = np.bincount(q.codes[:, level], minlength=k)
        assert set(sizes) <= {n // k, -(-n // k)}, (level, sizes)


def test_unbalanced_data_is_still_balanced_where_plain_kmeans_is_not():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(size=(180, 5)), rng.normal(size=(20, 5)) + 20])
    plain = np.bincount(rqkmeans(x, 1, 4, seed=0).codes[:, 0], minlength=4)
    balanced = np.bincount(rqkmeans_balanced(x, 1, 4, seed=0).codes[:, 0], minlength=4)
    assert plain.max() > 60 and set(balanced) == {50}


def test_balanced_assign_prefers_high_scores_within_capacity():
    score = np.array([[9, 1], [8, 1], [7, 1], [1, 0]], dtype=float)  # everyone prefers code 0
    labels = balanced_assign(score)
    assert list(labels) == [0, 0, 1, 1]


def test_sinkhorn_plan_has_uniform_marginals():
    rng = np.random.default_rng(0)
    x, c = rng.normal(size=(30, 3)), rng.normal(size=(5, 3))
    plan = np.exp(sinkhorn(sq_distances(x, c), iters=200))
    assert np.allclose(plan.sum(1), 1 / 30, atol=1e-4) and np.allclose(plan.sum(0), 1 / 5, atol=1e-4)


def test_level_stats():
    stats = level_stats(np.array([0, 0, 1, 1]), codebook_size=4)
    assert stats["codes_used"] == 2 and stats["utilization"] == 0.5 and stats["perplexity"] == pytest.approx(2.0)
    assert level_stats(np.array([3, 3, 3]), 4)["perplexity"] == pytest.approx(1.0)


def test_codebook_larger_than_catalogue_is_refused():
    with pytest.raises(ValueError, match="exceeds the number of items"):
        rqkmeans(np.zeros((5, 3)), 2, 8)


def test_rqvae_is_seeded_trains_and_leaves_global_rng_alone():
    x = clustered(n=128, dim=16)
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = rqvae(x, levels=3, codebook_size=8, seed=5, epochs=15, batch_size=64, hidden=(32,), latent_dim=8)
    assert torch.rand(1) == before  # fork_rng: the caller's RNG stream is unchanged
    b = rqvae(x, levels=3, codebook_size=8, seed=5, epochs=15, batch_size=64, hidden=(32,), latent_dim=8)
    assert np.array_equal(a.codes, b.codes) and a.codes.shape == (128, 3) and a.codes.max() < 8
    assert a.info["last_epoch_loss"]["recon"] < a.info["first_epoch_loss"]["recon"]
    assert a.info["beta"] == 0.25 and a.last_codebook.shape == (8, 8)
    c = rqvae(x, levels=3, codebook_size=8, seed=6, epochs=15, batch_size=64, hidden=(32,), latent_dim=8)
    assert not np.array_equal(a.codes, c.codes)


def test_rqvae_straight_through_gradients_reach_encoder_and_codebooks():
    torch.manual_seed(0)
    model = RQVAE(6, hidden=(8,), latent_dim=4, levels=2, codebook_size=4)
    x = torch.randn(32, 6)
    model.init_codebooks(x, seed=0)
    recon, codes, rq_loss = model(x)
    (((recon - x) ** 2).mean() + rq_loss).backward()
    assert model.encoder[0].weight.grad.abs().sum() > 0  # through the STE and the commitment term
    assert all(cb.grad.abs().sum() > 0 for cb in model.codebooks)
    assert codes.shape == (32, 2)


def test_dead_codes_are_restarted_onto_item_residuals():
    torch.manual_seed(0)
    model = RQVAE(6, hidden=(8,), latent_dim=4, levels=1, codebook_size=4)
    x = torch.randn(40, 6)
    with torch.no_grad():
        model.codebooks[0].copy_(torch.full((4, 4), 1e3))
        model.codebooks[0][0] = 0  # every item picks code 0; codes 1..3 are dead
    assert model.restart_dead_codes(x, torch.Generator().manual_seed(0)) == 3
    _, codes, _ = model(x)
    assert len(set(codes[:, 0].tolist())) > 1
