"""Tests of utils.hubness against naive full-matrix versions, scikit-learn and (when installed) faiss."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.special import gammaln
from scipy.stats import skew
from sklearn.neighbors import NearestNeighbors

from utils.geometry import topk_neighbors
from utils.hubness import (article_hub_counts, hub_counts, hub_filtered_latents, hubness_stats, knn_indices,
                           log_ball_cube_ratio)


def _points(n: int, d: int, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _naive_knn(X: torch.Tensor, k: int, metric: str) -> torch.Tensor:
    """Full N x N score matrix, self excluded, full sort."""
    if metric == "euclidean":
        score = -torch.cdist(X, X)
    elif metric == "cosine":
        Xn = X / X.norm(dim=1, keepdim=True)
        score = Xn @ Xn.T
    else:
        score = X @ X.T
    score.fill_diagonal_(-math.inf)
    return torch.argsort(score, dim=1, descending=True)[:, :k]


@pytest.mark.parametrize("metric", ["euclidean", "cosine", "ip"])
@pytest.mark.parametrize("n", [7, 300, 1000, 1029])
@pytest.mark.parametrize("group_size", [1, 16, 128])
def test_knn_matches_naive(metric, n, group_size):
    X = _points(n, 9, seed=n)
    k = min(5, n - 1)
    got = knn_indices(X, k, metric=metric, group_size=group_size, chunk_size=97)  # ragged last block
    assert torch.equal(got, _naive_knn(X, k, metric))


def test_knn_default_chunk_and_float32_agree_with_topk_neighbors():
    X = _points(4000, 32, dtype=torch.float32)
    for metric in ["euclidean", "cosine", "ip"]:
        assert torch.equal(knn_indices(X, 10, metric=metric), topk_neighbors(X, 10, metric=metric))


def test_knn_with_database_and_without_self_exclusion():
    X, Y = _points(50, 6, seed=1), _points(700, 6, seed=2)
    got = knn_indices(X, 3, Y=Y)
    naive = torch.argsort(torch.cdist(X, Y), dim=1)[:, :3]
    assert torch.equal(got, naive)
    with_self = knn_indices(Y, 1, exclude_self=False)
    assert torch.equal(with_self[:, 0], torch.arange(700))


def test_knn_numpy_input_returns_long_tensor():
    X = _points(200, 5).numpy()
    out = knn_indices(X, 4)
    assert out.dtype == torch.long and out.shape == (200, 4)


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_hub_counts_match_sklearn_brute(metric):
    X = _points(2500, 40, seed=3)
    k = 5
    nn = NearestNeighbors(n_neighbors=k + 1, algorithm="brute", metric=metric).fit(X.numpy())
    idx = nn.kneighbors(X.numpy(), return_distance=False)
    assert np.array_equal(idx[:, 0], np.arange(len(X)))  # sklearn returns the point itself first
    expected = np.bincount(idx[:, 1:].ravel(), minlength=len(X))
    counts = hub_counts(X, k, metric=metric)
    assert np.array_equal(counts.numpy(), expected)
    assert int(counts.sum()) == len(X) * k


def test_article_loop_matches_kernel():
    z = _points(2000, 64, seed=4)
    assert np.array_equal(article_hub_counts(z.numpy(), k=5, num_chunks=10), hub_counts(z, 5).numpy())


def test_faiss_flat_l2_and_ip():
    faiss = pytest.importorskip("faiss")
    X = _points(3000, 64, seed=5, dtype=torch.float32)
    k = 5
    index = faiss.IndexFlatL2(64)
    index.add(X.numpy())
    _, I = index.search(X.numpy(), k + 1)
    assert np.array_equal(I[:, 0], np.arange(len(X)))
    assert np.array_equal(np.sort(I[:, 1:], 1), np.sort(knn_indices(X, k).numpy(), 1))
    Xn = (X / X.norm(dim=1, keepdim=True)).contiguous()
    index = faiss.IndexFlatIP(64)
    index.add(Xn.numpy())
    _, I = index.search(Xn.numpy(), k + 1)
    assert np.array_equal(np.sort(I[:, 1:], 1), np.sort(knn_indices(X, k, metric="cosine").numpy(), 1))


def test_hubness_stats_against_scipy_and_by_hand():
    counts = np.array([0, 0, 1, 2, 3, 4, 10, 0, 5, 15])
    st = hubness_stats(counts)
    assert st["mean"] == pytest.approx(counts.mean())
    assert st["skewness"] == pytest.approx(skew(counts), rel=1e-12)
    assert st["top_share"] == pytest.approx((15 + 10) / counts.sum())  # floor(0.2 * 10) = 2 largest
    assert st["zero_fraction"] == pytest.approx(0.3)
    assert st["max"] == 15
    diffs = np.abs(counts[:, None] - counts[None, :]).sum()
    assert st["gini"] == pytest.approx(diffs / (2 * len(counts) ** 2 * counts.mean()), rel=1e-12)
    flat = hubness_stats(torch.full((6,), 5))
    assert flat["skewness"] == 0.0 and flat["gini"] == pytest.approx(0.0)


def test_log_ball_cube_ratio():
    n = np.arange(1, 101)
    expected = 0.5 * n * np.log(np.pi) - gammaln(n / 2 + 1) - n * np.log(2)
    np.testing.assert_allclose(log_ball_cube_ratio(n).numpy(), expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(log_ball_cube_ratio(torch.tensor([1, 2, 3])).exp().numpy(),
                               [1.0, math.pi / 4, math.pi / 6], rtol=1e-13)
    assert log_ball_cube_ratio(3).ndim == 0


def test_hub_filtered_latents_are_hubs_of_their_batch():
    gen = torch.Generator().manual_seed(6)
    z = hub_filtered_latents(10, 64, t=20, batch=2000, generator=gen)
    assert z.shape == (10, 64) and z.dtype == torch.float64
    gen = torch.Generator().manual_seed(6)
    batch = torch.randn(2000, 64, generator=gen, dtype=torch.float64)
    kept = batch[hub_counts(batch, 5) > 20]
    assert torch.equal(z, kept[:10])  # first batch already supplies them (2000 points, t = 20)
    with pytest.raises(RuntimeError, match="latents passed"):
        hub_filtered_latents(5, 2, t=50, batch=200, max_batches=2, generator=gen)


def test_bad_input_raises_value_error():
    X = _points(20, 3)
    with pytest.raises(ValueError, match="metric"):
        knn_indices(X, 2, metric="manhattan")
    with pytest.raises(ValueError, match="exceeds"):
        knn_indices(X, 20)
    with pytest.raises(ValueError, match="k must be"):
        knn_indices(X, 0)
    with pytest.raises(ValueError, match="2 dimension"):
        knn_indices(X[0], 1)
    with pytest.raises(ValueError, match="same dimension"):
        knn_indices(X, 1, Y=_points(5, 4))
    with pytest.raises(ValueError, match="finite"):
        knn_indices(torch.full((5, 2), math.nan), 1)
    with pytest.raises(ValueError, match="chunk_size"):
        knn_indices(X, 1, chunk_size=0)
    with pytest.raises(ValueError, match="group_size"):
        knn_indices(X, 1, group_size=0)
    with pytest.raises(ValueError, match="1-D"):
        hubness_stats(np.ones((3, 3)))
    with pytest.raises(ValueError, match="non-negative"):
        hubness_stats(np.array([1, -1, 2]))
    with pytest.raises(ValueError, match="top_fraction"):
        hubness_stats(np.array([1, 2, 3]), top_fraction=0.0)
    with pytest.raises(ValueError, match="positive integer"):
        log_ball_cube_ratio(2.5)
    with pytest.raises(ValueError, match=">= 1"):
        log_ball_cube_ratio(np.array([0, 3]))
    with pytest.raises(ValueError, match="t must be"):
        hub_filtered_latents(5, 8, t=-1)
    with pytest.raises(ValueError, match="smaller than batch"):
        hub_filtered_latents(5, 8, k=10, batch=10)
    with pytest.raises(ValueError, match="divisible"):
        article_hub_counts(np.zeros((11, 2)), num_chunks=10)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    X = _points(5000, 32, dtype=torch.float32)
    assert torch.equal(hub_counts(X.cuda(), 5).cpu(), hub_counts(X, 5))


def test_threaded_cpu_path_matches_naive_and_restores_thread_count():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        X = _points(1500, 12, seed=7)
        got = knn_indices(X, 5, chunk_size=64)  # 24 blocks over a pool of 2 workers
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert torch.equal(got, _naive_knn(X, 5, "euclidean"))
