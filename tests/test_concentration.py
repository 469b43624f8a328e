"""Tests of utils.concentration against naive formulas, scipy and Monte Carlo."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate, optimize, special, stats

from utils.concentration import (binomial_se, chernoff_objective, chernoff_optimum, chi2_norm_tail,
                                 inner_product_samples, inner_product_tail_exact, inner_product_tail_gil_pelaez,
                                 norm_sq_samples)

GRID_N = [50, 100, 200, 500]
GRID_EPS = [0.1, 0.3, 0.5]


def naive_two_sided(n: int, eps: float) -> float:
    """P(|chi2_n / n - 1| >= eps) by integrating the chi-square density directly."""
    pdf = lambda y: stats.chi2.pdf(y, n)
    lower, _ = integrate.quad(pdf, 0.0, n * (1 - eps), epsabs=0, epsrel=1e-12, limit=200)
    upper, _ = integrate.quad(pdf, n * (1 + eps), n * (1 + eps) + 60 * math.sqrt(2 * n) + 200, epsabs=0,
                              epsrel=1e-12, limit=200)
    return lower + upper


@pytest.mark.parametrize("n", GRID_N)
@pytest.mark.parametrize("eps", GRID_EPS)
def test_chi2_norm_tail_matches_naive_and_bounds(n: int, eps: float) -> None:
    t = chi2_norm_tail(n, eps)
    assert t["exact"] == pytest.approx(naive_two_sided(n, eps), rel=1e-8, abs=1e-300)
    assert t["upper_exact"] == pytest.approx(1.0 - stats.chi2.cdf(n * (1 + eps), n), rel=1e-6, abs=1e-15)
    # naive Chernoff values (np.log is fine for eps this large)
    assert t["chernoff_upper"] == pytest.approx(((1 + eps) * math.exp(-eps)) ** (n / 2), rel=1e-12)
    assert t["chernoff_lower"] == pytest.approx(((1 - eps) * math.exp(eps)) ** (n / 2), rel=1e-12)
    assert t["bound"] == pytest.approx(2 * math.exp(-n * eps**2 / 8), rel=1e-14)
    # the chain exact <= Chernoff <= 2 exp(-n eps^2/8), tail by tail as well
    assert t["upper_exact"] <= t["chernoff_upper"] and t["lower_exact"] <= t["chernoff_lower"]
    assert t["exact"] <= t["chernoff"] <= t["bound"]


def test_chi2_norm_tail_vectorised() -> None:
    n = np.array(GRID_N)[:, None]
    eps = np.array(GRID_EPS)[None, :]
    t = chi2_norm_tail(n, eps)
    assert t["exact"].shape == (4, 3)
    for i, k in enumerate(GRID_N):
        for j, e in enumerate(GRID_EPS):
            assert t["chernoff"][i, j] == pytest.approx(chi2_norm_tail(k, e)["chernoff"], rel=1e-15)
    assert isinstance(chi2_norm_tail(np.int64(10), 0.5)["exact"], float)


@pytest.mark.parametrize("tail", ["upper", "lower"])
@pytest.mark.parametrize("eps", [0.1, 0.5, 0.9])
def test_chernoff_optimum_matches_numerical_minimum(tail: str, eps: float) -> None:
    n = 50
    hi = n / 2 * (1 - 1e-12) if tail == "upper" else 50 * n
    res = optimize.minimize_scalar(lambda lam: chernoff_objective(lam, n, eps, tail=tail), bounds=(1e-12, hi),
                                   method="bounded", options={"xatol": 1e-10})
    lam_star, value = chernoff_optimum(n, eps, tail=tail)
    assert res.x == pytest.approx(lam_star, abs=1e-5 * n)
    assert math.exp(res.fun) == pytest.approx(value, abs=1e-12)
    assert chernoff_objective(lam_star, n, eps, tail=tail) == pytest.approx(math.log(value), abs=1e-12)


def test_chernoff_objective_diverges_beyond_half_n() -> None:
    assert chernoff_objective(25.0, 50, 0.3) == math.inf
    vals = chernoff_objective(np.array([1.0, 24.0, 26.0]), 50, 0.3)
    assert np.isfinite(vals[:2]).all() and vals[2] == math.inf


def test_inner_product_tail_closed_forms_and_peers() -> None:
    # n = 2: n <u, v> is Laplace(0, 1); n = 4: density (1 + |x|) e^{-|x|} / 4; n = 1: density K0(|x|) / pi.
    assert inner_product_tail_exact(2, 0.9) == pytest.approx(0.5 * math.exp(-1.8), rel=1e-9)
    assert inner_product_tail_exact(4, 0.3) == pytest.approx((2 + 1.2) * math.exp(-1.2) / 4, rel=1e-9)
    k0_tail, _ = integrate.quad(lambda x: special.k0(x) / math.pi, 0.5, math.inf)
    assert inner_product_tail_exact(1, 0.5) == pytest.approx(k0_tail, rel=1e-8)
    # the spec's reference values (two-sided) and the characteristic-function inversion
    for (n, eps), ref in {(64, 0.2): 0.109043, (64, 0.4): 1.79873e-3, (256, 0.2): 1.48169e-3,
                          (256, 0.4): 5.7269e-10}.items():
        p = inner_product_tail_exact(n, eps)
        assert 2 * p == pytest.approx(ref, rel=1e-5)
        assert inner_product_tail_gil_pelaez(n, eps) == pytest.approx(p, rel=1e-6, abs=1e-15)
    out = inner_product_tail_exact(np.array([64, 256]), 0.2)
    assert out.shape == (2,) and out[1] < out[0]


def test_monte_carlo_samplers() -> None:
    gen = torch.Generator().manual_seed(1234)
    n, m = 16, 200_000
    sq = norm_sq_samples(n, m, generator=gen, chunk_size=30_000)
    assert sq.shape == (m,) and sq.dtype == torch.float64
    assert abs(float(sq.mean()) - 1.0) < 5 * math.sqrt(2 / n / m)
    assert stats.kstest(n * sq.numpy(), stats.chi2(n).cdf).pvalue > 1e-4
    freq = float(((sq - 1).abs() >= 0.5).double().mean())
    p = chi2_norm_tail(n, 0.5)["exact"]
    assert abs(freq - p) < 5 * binomial_se(p, m)
    ip = inner_product_samples(n, m, generator=gen, dtype=torch.float32)
    assert ip.dtype == torch.float32 and ip.shape == (m,)
    # E<u,v>^4 = 3/n^2 + 6/n^3, so the sample mean of <u,v>^2 has SE sqrt((2/n^2 + 6/n^3) / m)
    assert abs(float((ip.double() ** 2).mean()) - 1 / n) < 5 * math.sqrt((2 / n**2 + 6 / n**3) / m)
    p = 2 * inner_product_tail_exact(n, 0.3)
    freq = float((ip.abs() >= 0.3).double().mean())
    assert abs(freq - p) < 5 * binomial_se(p, m)


def test_binomial_se() -> None:
    assert binomial_se(0.5, 100) == pytest.approx(0.05)
    np.testing.assert_allclose(binomial_se(np.array([0.0, 0.1]), 100), [0.0, 0.03])


@pytest.mark.parametrize("bad_n", [0, -3, 2.5, True, "10", np.array([10, 0])])
def test_bad_n_raises(bad_n) -> None:
    with pytest.raises(ValueError, match="n must be an integer"):
        chi2_norm_tail(bad_n, 0.3)
    with pytest.raises(ValueError, match="n must be an integer"):
        inner_product_tail_exact(bad_n, 0.3)


@pytest.mark.parametrize("bad_eps", [0.0, 1.0, -0.1, 1.5, float("nan"), "x", [0.2, 1.0]])
def test_bad_eps_raises(bad_eps) -> None:
    with pytest.raises(ValueError, match="eps must"):
        chi2_norm_tail(10, bad_eps)
    with pytest.raises(ValueError, match="eps must"):
        inner_product_tail_exact(10, bad_eps)
    with pytest.raises(ValueError, match="eps must"):
        chernoff_optimum(10, bad_eps)


def test_other_bad_input_raises() -> None:
    with pytest.raises(ValueError, match="tail must be"):
        chernoff_objective(1.0, 10, 0.3, tail="both")
    with pytest.raises(ValueError, match="lam must be positive"):
        chernoff_objective(0.0, 10, 0.3)
    with pytest.raises(ValueError, match="tail_mass"):
        inner_product_tail_exact(10, 0.3, tail_mass=0.1)
    with pytest.raises(ValueError, match="num_samples"):
        norm_sq_samples(10, 0)
    with pytest.raises(ValueError, match="dtype"):
        inner_product_samples(10, 10, dtype=torch.int64)
    with pytest.raises(ValueError, match="p must lie"):
        binomial_se(1.5, 10)


def test_gil_pelaez_rejects_bad_input():
    with pytest.raises(ValueError):
        inner_product_tail_gil_pelaez(0, 0.2)
    with pytest.raises(ValueError):
        inner_product_tail_gil_pelaez(64, 1.5)
