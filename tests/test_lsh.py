"""Tests of utils.lsh: SimHash codes, chunked Hamming distances and search, against naive loops."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from utils.lsh import cosine_from_hamming, hamming_distance, hamming_neighbors, simhash_codes, vector_at_angle


def _gen(seed: int = 0) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def test_simhash_codes_shape_dtype_and_sign_definition():
    X = torch.randn(50, 16, generator=_gen(1), dtype=torch.float64)
    codes = simhash_codes(X, 32, generator=_gen(2))
    assert codes.shape == (50, 32) and codes.dtype == torch.bool
    planes = torch.randn(32, 16, generator=_gen(2), dtype=torch.float64)  # same draw as inside simhash_codes
    assert torch.equal(codes, (X @ planes.T) > 0)
    assert torch.equal(simhash_codes(X, 32, planes=planes), codes)


def test_simhash_codes_scale_invariant_and_numpy_input():
    X = np.random.default_rng(0).normal(size=(20, 8))
    a = simhash_codes(X, 64, generator=_gen(3))
    b = simhash_codes(3.5 * torch.from_numpy(X), 64, generator=_gen(3))
    assert torch.equal(a, b)


def test_hamming_matches_naive_double_loop():
    X = torch.randn(100, 12, generator=_gen(4))
    codes = simhash_codes(X, 37, generator=_gen(5))
    fast = hamming_distance(codes, chunk_size=7)
    naive = np.zeros((100, 100), dtype=np.int64)
    c = codes.numpy()
    for i in range(100):
        for j in range(100):
            naive[i, j] = int(np.sum(c[i] != c[j]))
    assert fast.dtype == torch.int32
    np.testing.assert_array_equal(fast.numpy(), naive)


def test_hamming_two_sets_and_scipy_peer():
    from scipy.spatial.distance import cdist

    a = torch.rand(30, 50, generator=_gen(6)) > 0.5
    b = torch.rand(17, 50, generator=_gen(7)) > 0.5
    fast = hamming_distance(a, b, chunk_size=4)
    peer = np.rint(cdist(a.numpy(), b.numpy(), metric="hamming") * 50).astype(np.int64)  # scipy: a fraction
    np.testing.assert_array_equal(fast.numpy(), peer)
    np.testing.assert_array_equal(hamming_distance(a.int(), b.long()).numpy(), peer)  # 0/1 integer codes


def test_hamming_fraction_estimates_angle_over_pi():
    # Binomial(n, theta/pi): a 5-standard-error band fails with probability ~6e-7.
    n_bits = 4096
    u = torch.randn(64, generator=_gen(8), dtype=torch.float64)
    for theta in (0.3, 1.0, 2.0):
        v = vector_at_angle(u, theta, generator=_gen(9))
        assert math.isclose(float(torch.dot(u / u.norm(), v)), math.cos(theta), abs_tol=1e-12)
        codes = simhash_codes(torch.stack([u, v]), n_bits, generator=_gen(10))
        frac = int(hamming_distance(codes[:1], codes[1:])[0, 0]) / n_bits
        p = theta / math.pi
        assert abs(frac - p) < 5 * math.sqrt(p * (1 - p) / n_bits)


def test_vector_at_angle_batch_orthogonality():
    u = torch.randn(10, generator=_gen(11), dtype=torch.float64)
    thetas = torch.tensor([0.0, 0.5, math.pi / 2, math.pi], dtype=torch.float64)
    V = vector_at_angle(u, thetas, generator=_gen(12))
    assert V.shape == (4, 10)
    np.testing.assert_allclose(V.norm(dim=1).numpy(), 1.0, atol=1e-12)
    np.testing.assert_allclose((V @ (u / u.norm())).numpy(), np.cos(thetas.numpy()), atol=1e-12)
    U = torch.randn(4, 10, generator=_gen(16), dtype=torch.float64)  # row-by-row pairing
    W = vector_at_angle(U, thetas, generator=_gen(17))
    cos = (W * U).sum(dim=1) / U.norm(dim=1)
    np.testing.assert_allclose(cos.numpy(), np.cos(thetas.numpy()), atol=1e-12)
    with pytest.raises(ValueError, match="do not match"):
        vector_at_angle(U, thetas[:3])


def test_hamming_neighbors_matches_naive_and_excludes_self():
    codes = torch.rand(60, 24, generator=_gen(13)) > 0.5
    idx = hamming_neighbors(codes, 5, chunk_size=11)
    dist = hamming_distance(codes).numpy().astype(float)
    np.fill_diagonal(dist, np.inf)
    assert not (idx.numpy() == np.arange(60)[:, None]).any()
    got = np.take_along_axis(dist, idx.numpy(), axis=1)
    want = np.sort(dist, axis=1)[:, :5]
    np.testing.assert_array_equal(got, want)  # same distances (ties may pick different indices)


def test_cosine_from_hamming_endpoints():
    out = cosine_from_hamming(torch.tensor([0, 32, 64]), 64)
    np.testing.assert_allclose(out.numpy(), [1.0, 0.0, -1.0], atol=1e-15)


def test_validation_errors():
    X = torch.randn(4, 3)
    with pytest.raises(ValueError, match="n_bits"):
        simhash_codes(X, 0)
    with pytest.raises(ValueError, match="dimension"):
        simhash_codes(torch.randn(4), 8)
    with pytest.raises(ValueError, match="planes"):
        simhash_codes(X, 8, planes=torch.randn(8, 4))
    with pytest.raises(ValueError, match="boolean"):
        hamming_distance(torch.randn(4, 8))
    with pytest.raises(ValueError, match="0/1"):
        hamming_distance(torch.full((2, 3), 2))
    with pytest.raises(ValueError, match="same number of bits"):
        hamming_distance(torch.ones(2, 3, dtype=torch.bool), torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="chunk_size"):
        hamming_distance(torch.ones(2, 3, dtype=torch.bool), chunk_size=0)
    with pytest.raises(ValueError, match="exceeds"):
        hamming_neighbors(torch.ones(3, 4, dtype=torch.bool), 3)
    with pytest.raises(ValueError, match=r"\[0, n_bits"):
        cosine_from_hamming(torch.tensor([65]), 64)
    with pytest.raises(ValueError, match=r"\[0, pi\]"):
        vector_at_angle(torch.randn(5), 4.0)
    with pytest.raises(ValueError, match="nonzero"):
        vector_at_angle(torch.zeros(5), 1.0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    X = torch.randn(200, 32, generator=_gen(14))
    cpu = simhash_codes(X, 128, generator=_gen(15))
    gpu = simhash_codes(X.cuda(), 128, generator=_gen(15))
    assert gpu.is_cuda
    assert (gpu.cpu() != cpu).float().mean() < 1e-3  # float32 matmul differences can flip near-zero projections
    torch.testing.assert_close(hamming_distance(cpu.cuda()).cpu(), hamming_distance(cpu))
