"""Tests of utils.linalg: randomised range finder / SVD against exact SVD, scikit-learn and torch.svd_lowrank."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from utils.linalg import matrix_with_spectrum, random_orthonormal, randomized_range_finder, randomized_svd


def _gen(seed: int = 0) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def _decaying(p: int = 200, q: int = 120, rate: float = 10.0, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    sigma = torch.exp(-torch.arange(q, dtype=torch.float64) / rate)
    return matrix_with_spectrum(p, q, sigma, generator=_gen(seed)), sigma


def test_random_orthonormal_and_prescribed_spectrum():
    Q = random_orthonormal(50, 20, generator=_gen(1))
    torch.testing.assert_close(Q.T @ Q, torch.eye(20, dtype=torch.float64), atol=1e-12, rtol=0)
    M, sigma = _decaying(80, 40)
    torch.testing.assert_close(torch.linalg.svdvals(M), sigma, atol=1e-12, rtol=0)


def test_exact_for_low_rank_matrix():
    sigma = torch.tensor([5.0, 3.0, 2.0, 1.0, 0.5], dtype=torch.float64)
    M = matrix_with_spectrum(60, 40, sigma, generator=_gen(2))  # rank 5
    U, S, Vh = randomized_svd(M, 5, oversample=3, generator=_gen(3))
    torch.testing.assert_close(S, sigma, atol=1e-12, rtol=0)
    torch.testing.assert_close(U @ torch.diag(S) @ Vh, M, atol=1e-12, rtol=0)


def test_matches_naive_steps_and_orthonormality():
    M, _ = _decaying()
    U, S, Vh = randomized_svd(M, 10, oversample=5, n_iter=1, generator=_gen(4))
    assert U.shape == (200, 10) and S.shape == (10,) and Vh.shape == (10, 120)
    torch.testing.assert_close(U.T @ U, torch.eye(10, dtype=torch.float64), atol=1e-12, rtol=0)
    torch.testing.assert_close(Vh @ Vh.T, torch.eye(10, dtype=torch.float64), atol=1e-12, rtol=0)
    # naive: same Omega, one power iteration written out
    omega = torch.randn(120, 15, generator=_gen(4), dtype=torch.float64)
    Q = torch.linalg.qr(M @ omega).Q
    Q = torch.linalg.qr(M @ torch.linalg.qr(M.T @ Q).Q).Q
    torch.testing.assert_close(S, torch.linalg.svdvals(Q.T @ M)[:10], atol=1e-12, rtol=0)
    torch.testing.assert_close(randomized_range_finder(M, 15, 1, test_matrix=omega), Q, atol=1e-12, rtol=0)


def test_power_iterations_reach_peers():
    from sklearn.utils.extmath import randomized_svd as sk_randomized_svd

    M, sigma = _decaying(300, 200, rate=5.0)
    _, S, _ = randomized_svd(M, 15, oversample=10, n_iter=4, generator=_gen(5))
    _, s_sk, _ = sk_randomized_svd(M.numpy(), 15, n_oversamples=10, n_iter=4, random_state=0)
    _, s_t, _ = torch.svd_lowrank(M, q=25, niter=4)
    np.testing.assert_allclose(S.numpy(), sigma[:15].numpy(), rtol=1e-8)
    np.testing.assert_allclose(s_sk, sigma[:15].numpy(), rtol=1e-8)
    np.testing.assert_allclose(s_t[:15].numpy(), sigma[:15].numpy(), rtol=1e-8)
    # never above the truth (B = Q^T M is a compression)
    _, S0, _ = randomized_svd(M, 15, oversample=2, n_iter=0, generator=_gen(6))
    assert bool((S0 <= sigma[:15] + 1e-12).all())


def test_range_error_near_optimal_and_factor_formula():
    sigma = torch.exp(-torch.arange(200, dtype=torch.float64) / 10)
    M, U, V = matrix_with_spectrum(300, 200, sigma, generator=_gen(7), return_factors=True)
    torch.testing.assert_close(U @ torch.diag(sigma) @ V.T, M, atol=1e-13, rtol=0)
    Q = randomized_range_finder(M, 30, generator=_gen(8))
    err = torch.linalg.matrix_norm(M - Q @ (Q.T @ M), ord=2)
    err_factors = torch.linalg.matrix_norm((U - Q @ (Q.T @ U)) * sigma, ord=2)
    torch.testing.assert_close(err_factors, err, atol=1e-12, rtol=0)
    assert sigma[20] <= err <= 3 * sigma[20]


def test_float32_and_numpy_input():
    M, sigma = _decaying()
    U, S, Vh = randomized_svd(M.float().numpy(), 5, n_iter=3, generator=_gen(9))
    assert S.dtype == torch.float32
    np.testing.assert_allclose(S.numpy(), sigma[:5].numpy(), rtol=1e-4)


def test_validation_errors():
    M = torch.randn(10, 6, dtype=torch.float64)
    with pytest.raises(ValueError, match="k"):
        randomized_svd(M, 0)
    with pytest.raises(ValueError, match="must not exceed"):
        randomized_svd(M, 7)
    with pytest.raises(ValueError, match="oversample"):
        randomized_svd(M, 2, oversample=-1)
    with pytest.raises(ValueError, match="n_iter"):
        randomized_svd(M, 2, n_iter=1.5)
    with pytest.raises(ValueError, match="2 dimension"):
        randomized_svd(torch.randn(5), 1)
    with pytest.raises(ValueError, match="test_matrix"):
        randomized_range_finder(M, 3, test_matrix=torch.randn(6, 4))
    with pytest.raises(ValueError, match="size"):
        randomized_range_finder(M, 7)
    with pytest.raises(ValueError, match="cols"):
        random_orthonormal(3, 5)
    with pytest.raises(ValueError, match="non-negative"):
        matrix_with_spectrum(5, 4, torch.tensor([1.0, -1.0]))
    with pytest.raises(ValueError, match="len"):
        matrix_with_spectrum(5, 4, torch.ones(5))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    M, sigma = _decaying()
    _, S, _ = randomized_svd(M.cuda(), 10, n_iter=2, generator=_gen(10))
    assert S.is_cuda
    _, S_cpu, _ = randomized_svd(M, 10, n_iter=2, generator=_gen(10))
    torch.testing.assert_close(S.cpu(), S_cpu, atol=1e-10, rtol=0)
