"""Tests of utils.entropy against naive versions: scipy quadrature, closed forms, direct softmax, brute-force scans."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate, special

from utils.entropy import (LAPLACE_LIMIT, attention_row_entropy, dimension_threshold, log_mean_exp_cos,
                           skipgram_entropy_offset, sphere_angle_logpdf)


def _quad_moments(n: int, s: float) -> tuple[float, float]:
    """Naive peer: log E[e^{s cos t}] and E[e^{s cos t} cos t] / E[e^{s cos t}] with scipy.integrate.quad."""
    log_beta = special.betaln(0.5, (n - 1) / 2)

    def weight(t: float) -> float:  # density times e^{s (cos t - 1)} (shifted to avoid overflow)
        return math.exp((n - 2) * math.log(math.sin(t)) - log_beta + s * (math.cos(t) - 1.0)) if n > 2 else \
            math.exp(-log_beta + s * (math.cos(t) - 1.0))

    mass = integrate.quad(weight, 0.0, math.pi, epsabs=0, epsrel=1e-13, limit=200)[0]
    first = integrate.quad(lambda t: weight(t) * math.cos(t), 0.0, math.pi, epsabs=0, epsrel=1e-13, limit=200)[0]
    return math.log(mass) + s, first / mass


# ---------------------------------------------------------------- sphere_angle_logpdf

@pytest.mark.parametrize("n", [2, 3, 5, 16, 64])
def test_angle_density_normalised(n):
    density = lambda t: math.exp(float(sphere_angle_logpdf(torch.tensor(t, dtype=torch.float64), n)))  # noqa: E731
    total = integrate.quad(density, 0, math.pi, epsrel=1e-12, limit=200)[0]
    assert total == pytest.approx(1.0, abs=1e-10)


def test_angle_density_shape_dtype_and_support():
    theta = torch.rand(3, 4, 5, dtype=torch.float32) * math.pi
    out = sphere_angle_logpdf(theta, 7)
    assert out.shape == theta.shape and out.dtype == torch.float32
    naive = 5 * np.log(np.sin(theta.double().numpy())) - special.betaln(0.5, 3.0)
    np.testing.assert_allclose(out.double().numpy(), naive, rtol=1e-5, atol=1e-5)
    outside = sphere_angle_logpdf(np.array([-0.1, 3.5]), 4)
    assert torch.isneginf(outside).all()
    assert float(sphere_angle_logpdf(torch.tensor([0.3]), 2)) == pytest.approx(-math.log(math.pi))


def test_angle_density_matches_sampled_angles():
    gen = torch.Generator().manual_seed(0)
    u = torch.randn(20000, 6, generator=gen, dtype=torch.float64)
    v = torch.randn(20000, 6, generator=gen, dtype=torch.float64)
    cos = (u * v).sum(1) / (u.norm(dim=1) * v.norm(dim=1))
    # E[cos^2 t] = 1/n for uniform directions; with the density: integral of cos^2 p(t)
    log_density = lambda t: float(sphere_angle_logpdf(torch.tensor(t, dtype=torch.float64), 6))  # noqa: E731
    expected = integrate.quad(lambda t: math.cos(t) ** 2 * math.exp(log_density(t)), 0, math.pi)[0]
    assert expected == pytest.approx(1 / 6, abs=1e-10)
    assert float((cos ** 2).mean()) == pytest.approx(1 / 6, abs=5 * 0.16 / math.sqrt(20000))


@pytest.mark.parametrize("bad", [1, 0, 2.5, "3", True])
def test_angle_density_rejects_bad_n(bad):
    with pytest.raises(ValueError, match="n must be an integer"):
        sphere_angle_logpdf(torch.tensor([1.0]), bad)


def test_angle_density_rejects_bad_theta():
    with pytest.raises(ValueError, match="theta must be"):
        sphere_angle_logpdf([0.1, 0.2], 4)


# ---------------------------------------------------------------- log_mean_exp_cos

@pytest.mark.parametrize("n,s", [(2, 2.0), (3, 3.0), (5, 0.7), (8, 8.0), (16, 16.0), (33, 5.0), (64, 64.0)])
def test_log_mean_exp_cos_vs_quad(n, s):
    naive, _ = _quad_moments(n, s)
    # midpoint-rule error is O(grid^-(n-1)) (the integrand vanishes to order n-2 at 0 and pi): n = 3 needs more points
    grid = 200_000 if n == 3 else 20_000
    assert log_mean_exp_cos(n, s, grid=grid) == pytest.approx(naive, abs=1e-9)


def test_log_mean_exp_cos_closed_forms():
    # n = 2: uniform angle, E e^{s cos} = I0(s); n = 3: cos uniform on [-1, 1], E e^{s cos} = sinh(s)/s.
    s = 7.5
    assert log_mean_exp_cos(2, s) == pytest.approx(math.log(special.i0(s)), abs=1e-12)
    assert log_mean_exp_cos(3, s) == pytest.approx(math.log(math.sinh(s) / s), abs=1e-9)
    assert log_mean_exp_cos(10, 0.0) == pytest.approx(0.0, abs=1e-14)


def test_log_mean_exp_cos_vectorised_and_default_scale():
    dims = [4, 12, 40]
    out = log_mean_exp_cos(dims, grid=20_000)
    assert isinstance(out, np.ndarray) and out.shape == (3,)
    assert isinstance(log_mean_exp_cos(12, grid=20_000), float)
    np.testing.assert_allclose(out, [log_mean_exp_cos(d, d, grid=20_000) for d in dims], atol=1e-13)
    np.testing.assert_allclose(log_mean_exp_cos(dims, [1.0, 2.0, 3.0], grid=20_000),
                               [log_mean_exp_cos(d, s, grid=20_000) for d, s in zip(dims, [1.0, 2.0, 3.0])],
                               atol=1e-13)
    # large n: no underflow / overflow
    assert np.isfinite(log_mean_exp_cos(4096, 4096, grid=20_000))


def test_log_mean_exp_cos_rejects_bad_input():
    with pytest.raises(ValueError, match="n must be an integer"):
        log_mean_exp_cos(1)
    with pytest.raises(ValueError, match="empty"):
        log_mean_exp_cos([])
    with pytest.raises(ValueError, match="one entry per n"):
        log_mean_exp_cos([4, 5], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="finite"):
        log_mean_exp_cos(4, math.inf)
    with pytest.raises(ValueError, match="grid"):
        log_mean_exp_cos(4, grid=3)


# ---------------------------------------------------------------- skipgram_entropy_offset

@pytest.mark.parametrize("n", [2, 4, 8, 16, 32, 64])
def test_entropy_offset_vs_quad(n):
    log_mean, tilted_cos = _quad_moments(n, float(n))
    assert skipgram_entropy_offset(n, grid=20_000) == pytest.approx(log_mean - n * tilted_cos, abs=1e-9)


def test_entropy_offset_lam_and_limit():
    log_mean, tilted_cos = _quad_moments(20, 0.5 * 20)
    assert skipgram_entropy_offset(20, lam=0.5, grid=20_000) == pytest.approx(log_mean - 10 * tilted_cos, abs=1e-9)
    dims = np.array([64, 256, 1024])
    ratio = skipgram_entropy_offset(dims, grid=20_000) / dims
    assert np.all(np.diff(ratio) > 0) and np.all(ratio < LAPLACE_LIMIT)  # approaches the limit from below
    assert abs(ratio[-1] - LAPLACE_LIMIT) < 2e-4
    assert LAPLACE_LIMIT == pytest.approx(-0.5 * math.log((1 + math.sqrt(5)) / 2), abs=1e-15)


def test_entropy_offset_grid_converged():
    dims = [8, 128, 1024]
    coarse = skipgram_entropy_offset(dims, grid=20_000)
    fine = skipgram_entropy_offset(dims, grid=200_000)
    np.testing.assert_allclose(coarse, fine, atol=1e-9)


def test_entropy_offset_rejects_bad_lam():
    for bad in (0.0, -1.0, math.nan, "x"):
        with pytest.raises(ValueError, match="lam must be"):
            skipgram_entropy_offset(8, lam=bad)


# ---------------------------------------------------------------- dimension_threshold

def _brute_threshold(N: float, factor: float) -> int:
    for n in range(2, 200):
        log_mean, tilted_cos = _quad_moments(n, float(n))
        if factor * math.log(N) + log_mean - n * tilted_cos < 0:
            return n
    raise AssertionError("not found")


@pytest.mark.parametrize("N,criterion", [(10.0, "joint"), (300.0, "joint"), (1000.0, "row"), (2.0, "row")])
def test_threshold_vs_brute_force(N, criterion):
    expected = _brute_threshold(N, 2.0 if criterion == "joint" else 1.0)
    assert dimension_threshold(N, criterion=criterion) == expected


def test_threshold_tracks_8_33_log_n():
    for N in (1e3, 1e5, 5e6, 1e8):
        assert abs(dimension_threshold(N) - 8.33 * math.log(N)) <= 1.5
        assert abs(dimension_threshold(N, criterion="row") - 4.16 * math.log(N)) <= 1.5


def test_threshold_rejects_bad_input():
    with pytest.raises(ValueError, match="N must be"):
        dimension_threshold(1.5)
    with pytest.raises(ValueError, match="N must be"):
        dimension_threshold(math.inf)
    with pytest.raises(ValueError, match="criterion"):
        dimension_threshold(100, criterion="conditional")
    with pytest.raises(ValueError, match="raise n_max"):
        dimension_threshold(1e8, n_max=50)


# ---------------------------------------------------------------- attention_row_entropy

@pytest.mark.parametrize("chunk_size", [1, 7, 1000, 65536])
def test_row_entropy_vs_direct_softmax(chunk_size):
    gen = torch.Generator().manual_seed(1)
    q = torch.randn(6, 12, generator=gen, dtype=torch.float64) * 3
    K = torch.randn(1000, 12, generator=gen, dtype=torch.float64)
    probs = torch.softmax(0.7 * q @ K.T, dim=1)
    naive = -(probs * torch.log(probs)).sum(dim=1)
    out = attention_row_entropy(q, K, 0.7, chunk_size=chunk_size)
    assert out.shape == (6,) and out.dtype == torch.float64
    torch.testing.assert_close(out, naive, atol=1e-11, rtol=0)


def test_row_entropy_extreme_logits_and_1d_query():
    # huge logits: a naive exp overflows, the streamed version does not; one dominant key gives entropy ~ 0
    K = torch.eye(4, dtype=torch.float64) * 1e4
    q = torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=torch.float64)
    out = attention_row_entropy(q, K, chunk_size=2)
    assert out.shape == () and float(out) == pytest.approx(0.0, abs=1e-12)
    # equal logits: entropy log N exactly
    assert float(attention_row_entropy(torch.zeros(3), torch.ones(50, 3))) == pytest.approx(math.log(50), abs=1e-6)


def test_row_entropy_float32_and_numpy():
    rng = np.random.default_rng(2)
    q, K = rng.normal(size=(3, 8)).astype(np.float32), rng.normal(size=(500, 8)).astype(np.float32)
    out = attention_row_entropy(q, K, chunk_size=128)
    assert out.dtype == torch.float32
    ref = attention_row_entropy(q.astype(np.float64), K.astype(np.float64))
    torch.testing.assert_close(out.double(), ref, atol=1e-4, rtol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_row_entropy_cuda():
    gen = torch.Generator().manual_seed(3)
    q = torch.randn(4, 16, generator=gen, dtype=torch.float64)
    K = torch.randn(3000, 16, generator=gen, dtype=torch.float64)
    out = attention_row_entropy(q.cuda(), K.cuda(), chunk_size=512)
    assert out.is_cuda
    torch.testing.assert_close(out.cpu(), attention_row_entropy(q, K), atol=1e-10, rtol=0)


def test_row_entropy_rejects_bad_input():
    with pytest.raises(ValueError, match="same dimension"):
        attention_row_entropy(torch.randn(2, 3), torch.randn(5, 4))
    with pytest.raises(ValueError, match="q must have shape"):
        attention_row_entropy(torch.randn(2, 3, 4), torch.randn(5, 4))
    with pytest.raises(ValueError, match="K must have 2"):
        attention_row_entropy(torch.randn(2, 3), torch.randn(5))
    with pytest.raises(ValueError, match="at least one key"):
        attention_row_entropy(torch.randn(2, 3), torch.randn(0, 3))
    with pytest.raises(ValueError, match="scale must be"):
        attention_row_entropy(torch.randn(2, 3), torch.randn(5, 3), scale=math.nan)
    with pytest.raises(ValueError, match="chunk_size"):
        attention_row_entropy(torch.randn(2, 3), torch.randn(5, 3), chunk_size=0)
