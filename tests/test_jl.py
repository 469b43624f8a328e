"""Tests of utils.jl against naive per-trial loops and scikit-learn's random projections."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats
from sklearn.random_projection import GaussianRandomProjection, johnson_lindenstrauss_min_dim

from utils.geometry import jl_distortion, projected_gram_sample
from utils.jl import (first_n_reaching, fixed_vector_projections, jl_dimension_bounds, jl_max_distortion,
                      jl_max_distortion_nested, jl_success_curve, jl_success_rate, jl_union_bound,
                      near_orthogonality)


def cloud(num_points: int = 12, dim: int = 40, seed: int = 0) -> torch.Tensor:
    return torch.randn(num_points, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def naive_inner_product_dev(V: torch.Tensor, W: torch.Tensor) -> float:
    worst = 0.0
    for i in range(V.shape[0]):
        for j in range(i + 1, V.shape[0]):
            worst = max(worst, abs(float(W[i] @ W[j]) - float(V[i] @ V[j])))
    return worst


@pytest.mark.parametrize("dim", [40, 8])  # 8 < N: projected_gram_sample falls back to explicit matrices
def test_max_distortion_matches_naive(dim: int) -> None:
    V = cloud(dim=dim)
    trials, n_out = 5, 7
    got = jl_max_distortion(V, n_out, trials, generator=torch.Generator().manual_seed(3), dtype=torch.float64,
                            trial_batch=trials)
    W = projected_gram_sample(V, n_out, trials, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    want = [jl_distortion(V, W[t])["max_abs"] for t in range(trials)]
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-10)
    got_ip = jl_max_distortion(V, n_out, trials, kind="inner_product", generator=torch.Generator().manual_seed(3),
                               dtype=torch.float64, trial_batch=trials)
    np.testing.assert_allclose(got_ip.numpy(), [naive_inner_product_dev(V, W[t]) for t in range(trials)], rtol=1e-10)


def test_batching_and_float32_do_not_change_results() -> None:
    V = cloud()
    a = jl_max_distortion(V, 9, 6, generator=torch.Generator().manual_seed(5), dtype=torch.float64, trial_batch=6)
    b = jl_max_distortion(V, 9, 6, generator=torch.Generator().manual_seed(5), dtype=torch.float64, trial_batch=6)
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    c = jl_max_distortion(V, 9, 6, generator=torch.Generator().manual_seed(5), dtype=torch.float32, trial_batch=6)
    assert c.dtype == torch.float64 and c.shape == (6,)
    assert jl_max_distortion(V, 9, 7, generator=torch.Generator().manual_seed(5), trial_batch=2).shape == (7,)


def test_nested_matches_naive_prefixes() -> None:
    V = cloud()
    grid, trials = [12, 5, 30], 4
    got = jl_max_distortion_nested(V, grid, trials, generator=torch.Generator().manual_seed(7), dtype=torch.float64,
                                   trial_batch=trials)
    W = projected_gram_sample(V, 30, trials, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    for row, k in enumerate(grid):
        want = [jl_distortion(V, W[t, :, :k] * math.sqrt(30 / k))["max_abs"] for t in range(trials)]
        np.testing.assert_allclose(got[row].numpy(), want, rtol=1e-10)
    rates = jl_success_curve(V, grid, trials, 0.5, generator=torch.Generator().manual_seed(7), nested=True)
    assert rates.shape == (3,)


def test_success_rate_agrees_with_sklearn_projections() -> None:
    """Same law: the Cholesky trick versus scikit-learn's explicit Gaussian matrices (success rate within 5 SE)."""
    V = cloud(num_points=15, dim=60, seed=1).numpy()
    n_out, eps = 40, 0.5
    ours = jl_success_rate(V, n_out, 4000, eps, generator=torch.Generator().manual_seed(11))
    runs = 300
    ok = 0
    for seed in range(runs):
        proj = GaussianRandomProjection(n_components=n_out, random_state=seed).fit_transform(V)
        ok += jl_distortion(V, proj)["max_abs"] <= eps
    theirs = ok / runs
    se = math.sqrt(ours * (1 - ours) / runs + ours * (1 - ours) / 4000)
    assert 0.05 < ours < 0.95  # an informative regime
    assert abs(theirs - ours) < 5 * se


def test_dimension_bounds_match_sklearn() -> None:
    for num_points in (50, 200, 10_000):
        for eps in (0.1, 0.3, 0.5, 0.9):
            b = jl_dimension_bounds(num_points, eps)
            assert int(b["sklearn"]) == johnson_lindenstrauss_min_dim(num_points, eps=eps)
            assert b["article_24"] == pytest.approx(24 * math.log(num_points) / eps**2)
            assert b["article_16"] == pytest.approx(b["article_24"] * 2 / 3)
    assert johnson_lindenstrauss_min_dim(10_000, eps=0.1) == 7894


def test_union_bound() -> None:
    assert jl_union_bound(200, 509, 0.5) == pytest.approx(200 * 199 * math.exp(-509 / 32))
    assert jl_union_bound(200, 509, 0.5, kind="inner_product") == pytest.approx(2 * jl_union_bound(200, 509, 0.5))
    # n > 24 log N / eps^2 makes the bound < 1/N
    n = math.ceil(24 * math.log(200) / 0.25)
    assert jl_union_bound(200, n, 0.5) < 1 / 200


def test_first_n_reaching() -> None:
    grid = [10, 20, 30, 40]
    assert first_n_reaching(grid, [0.1, 0.99, 0.9, 1.0], 0.95) == 20  # no monotonicity assumed
    assert first_n_reaching(grid, [0.1, 0.2, 0.3, 0.4], 0.95) is None
    assert first_n_reaching(grid, [0.1, 0.2, 0.3, 0.4], 0.0) == 10


def test_fixed_vector_projections_law() -> None:
    u = torch.randn(50, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    samples = fixed_vector_projections(u, 6, 3000, generator=torch.Generator().manual_seed(4), chunk_size=700)
    assert samples.shape == (3000, 6)
    scaled = 6 * (samples**2).sum(dim=1) / (u @ u)
    assert stats.kstest(scaled.numpy(), stats.chi2(6).cdf).pvalue > 1e-4
    # peer: scikit-learn's GaussianRandomProjection uses the same N(0, 1/n_components) entries
    comp = GaussianRandomProjection(n_components=6, random_state=0).fit(np.zeros((2, 5000))).components_
    assert abs(comp.var() - 1 / 6) < 5 * math.sqrt(2 / comp.size) / 6


def test_near_orthogonality() -> None:
    Q, _ = torch.linalg.qr(torch.randn(30, 30, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    r = near_orthogonality(Q)
    assert r["max_diag"] < 1e-12 and r["max_offdiag"] < 1e-12 and r["op_dev"] < 1e-12
    W = torch.randn(40, 30, generator=torch.Generator().manual_seed(1), dtype=torch.float64) / math.sqrt(40)
    r = near_orthogonality(W)
    G = (W.T @ W).numpy()
    assert r["max_diag"] == pytest.approx(np.abs(np.diag(G) - 1).max(), rel=1e-12)
    assert r["max_offdiag"] == pytest.approx(np.abs(G - np.diag(np.diag(G))).max(), rel=1e-12)
    s = np.linalg.svd(W.numpy(), compute_uv=False)
    np.testing.assert_allclose(r["s"], s, rtol=1e-10)
    assert r["op_dev"] == pytest.approx(np.linalg.norm(G - np.eye(30), 2), rel=1e-10)


def test_bad_input_raises() -> None:
    V = cloud()
    with pytest.raises(ValueError, match="kind must be"):
        jl_max_distortion(V, 5, 2, kind="angle")
    with pytest.raises(ValueError, match="at least 2 points"):
        jl_max_distortion(V[:1], 5, 2)
    with pytest.raises(ValueError, match="repeated points"):
        jl_max_distortion(torch.cat([V, V[:1]]), 5, 2)
    with pytest.raises(ValueError, match="2 dimension"):
        jl_max_distortion(V[0], 5, 2)
    with pytest.raises(ValueError, match="n_trials"):
        jl_max_distortion(V, 5, 0)
    with pytest.raises(ValueError, match="n_out"):
        jl_max_distortion(V, 0, 2)
    with pytest.raises(ValueError, match="dtype"):
        jl_max_distortion(V, 5, 2, dtype=torch.int32)
    with pytest.raises(ValueError, match="trial_batch"):
        jl_max_distortion(V, 5, 2, trial_batch=0)
    with pytest.raises(ValueError, match="eps must lie"):
        jl_success_rate(V, 5, 2, 1.0)
    with pytest.raises(ValueError, match="eps must lie"):
        jl_dimension_bounds(100, 0.0)
    with pytest.raises(ValueError, match="num_points"):
        jl_dimension_bounds(1, 0.5)
    with pytest.raises(ValueError, match="n_grid must not be empty"):
        jl_max_distortion_nested(V, [], 2)
    with pytest.raises(ValueError, match="equal length"):
        first_n_reaching([1, 2], [0.5], 0.5)
    with pytest.raises(ValueError, match="p must lie"):
        first_n_reaching([1, 2], [0.5, 0.6], 1.5)
    with pytest.raises(ValueError, match="at least as many rows"):
        near_orthogonality(torch.randn(3, 5))
    with pytest.raises(ValueError, match="1 dimension"):
        fixed_vector_projections(torch.randn(3, 5), 2, 10)
    with pytest.raises(ValueError, match="kind must be"):
        jl_union_bound(10, 5, 0.5, kind="x")


def test_success_curve_rejects_bad_input():
    V = torch.randn(5, 20, dtype=torch.float64)
    with pytest.raises(ValueError, match="empty"):
        jl_success_curve(V, [], 10, 0.5)
    with pytest.raises(ValueError):
        jl_success_curve(V, [8], 10, 1.5)
