"""Tests of utils.attention: linear attention (non-causal and chunked causal) against the naive O(n^2) masked
reference, softmax attention against torch's scaled_dot_product_attention, Performer's random features against
exact softmax attention, entropies against scipy, and argument validation."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import entropy as scipy_entropy

from utils.attention import (attention_entropy, attention_matrix, gaussian_orthogonal_matrix, linear_attention,
                             linear_attention_entropy, linear_attention_matrix, linear_attention_naive,
                             performer_features, rank_collapse_residual, softmax_attention)

F64 = torch.float64


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _elu1(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.elu(x) + 1


def _qkv(shape_q, shape_k, d_v, seed=0):
    g = _gen(seed)
    q = torch.randn(*shape_q, generator=g, dtype=F64)
    k = torch.randn(*shape_k, generator=g, dtype=F64)
    v = torch.randn(*shape_k[:-1], d_v, generator=g, dtype=F64)
    return q, k, v


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


# ---------------------------------------------------------------- linear attention vs the naive masked reference
@pytest.mark.parametrize("feature", [torch.exp, _elu1])
def test_linear_noncausal_matches_naive(feature):
    q, k, v = _qkv((2, 3, 64, 8), (2, 3, 64, 8), 5)
    fast = linear_attention(feature(q), feature(k), v)
    ref = linear_attention_naive(feature(q), feature(k), v)
    assert fast.shape == (2, 3, 64, 5)
    assert _rel_err(fast, ref) < 1e-12


@pytest.mark.parametrize("feature", [torch.exp, _elu1])
@pytest.mark.parametrize("chunk", [1, 7, 16, 33, 64, 100, 1000])
def test_linear_causal_matches_naive(feature, chunk):
    n = 100  # 7, 16, 33, 64 do not divide n; 1000 > n is a single chunk
    q, k, v = _qkv((2, n, 6), (2, n, 6), 4, seed=1)
    fast = linear_attention(feature(q), feature(k), v, causal=True, chunk_size=chunk)
    A = linear_attention_matrix(feature(q), feature(k), causal=True)
    assert torch.all(A.triu(1) == 0)
    assert _rel_err(fast, A @ v) < 1e-12
    # explicit prefix-sum loop, the textbook O(n) recursion
    phq, phk = feature(q), feature(k)
    S = torch.zeros(2, 6, 4, dtype=F64)
    z = torch.zeros(2, 6, dtype=F64)
    rows = []
    for i in range(n):
        S = S + phk[:, i, :, None] * v[:, i, None, :]
        z = z + phk[:, i]
        rows.append((phq[:, i, None, :] @ S).squeeze(1) / (phq[:, i] * z).sum(-1, keepdim=True))
    assert _rel_err(fast, torch.stack(rows, dim=1)) < 1e-12


def test_linear_causal_first_row_and_last_row():
    q, k, v = _qkv((10, 3), (10, 3), 2)
    out = linear_attention(q.exp(), k.exp(), v, causal=True, chunk_size=3)
    assert torch.allclose(out[0], v[0], rtol=1e-13, atol=0)   # row 0 attends only to itself
    assert torch.allclose(out[-1], linear_attention(q.exp(), k.exp(), v)[-1], rtol=1e-12, atol=0)


def test_linear_attention_broadcasts_leading_dims():
    g = _gen(3)
    phq = torch.rand(2, 1, 20, 4, generator=g, dtype=F64)
    phk = torch.rand(1, 3, 20, 4, generator=g, dtype=F64)
    v = torch.randn(20, 5, generator=g, dtype=F64)
    for causal in (False, True):
        out = linear_attention(phq, phk, v, causal=causal, chunk_size=6)
        assert out.shape == (2, 3, 20, 5)
        ref = linear_attention_naive(phq.expand(2, 3, 20, 4), phk.expand(2, 3, 20, 4), v, causal=causal)
        assert _rel_err(out, ref) < 1e-12


def test_linear_attention_numpy_and_float32():
    rng = np.random.default_rng(0)
    phq, phk, v = rng.random((16, 4)), rng.random((16, 4)), rng.standard_normal((16, 3))
    out = linear_attention(phq, phk, v, causal=True, chunk_size=5)
    assert out.dtype == F64
    out32 = linear_attention(torch.tensor(phq, dtype=torch.float32), torch.tensor(phk, dtype=torch.float32),
                             torch.tensor(v, dtype=torch.float32), causal=True, chunk_size=5)
    assert out32.dtype == torch.float32
    assert _rel_err(out32.double(), out) < 1e-5


def test_linear_attention_rope_numerator():
    from utils.positions import apply_rope
    g = _gen(4)
    phq = torch.rand(12, 6, generator=g, dtype=F64)
    phk = torch.rand(12, 6, generator=g, dtype=F64)
    v = torch.randn(12, 3, generator=g, dtype=F64)
    pos = torch.arange(12)
    rq, rk = apply_rope(phq, pos), apply_rope(phk, pos)
    for causal in (False, True):
        num = rq @ rk.T
        den = phq @ phk.T
        if causal:
            num, den = num.tril(), den.tril()
        ref = (num @ v) / den.sum(-1, keepdim=True)
        out = linear_attention(phq, phk, v, causal=causal, chunk_size=5, rope_positions=pos)
        assert _rel_err(out, ref) < 1e-12


# ---------------------------------------------------------------- softmax attention vs torch's SDPA (peer)
@pytest.mark.parametrize("causal", [False, True])
def test_softmax_attention_matches_sdpa(causal):
    q, k, v = _qkv((2, 3, 40, 8), (2, 3, 40, 8), 6, seed=5)
    ours = softmax_attention(q, k, v, causal=causal)
    peer = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal)
    assert _rel_err(ours, peer) < 1e-12
    A = attention_matrix(q, k, causal=causal, scale=1.0)
    assert torch.allclose(A.sum(-1), torch.ones((), dtype=F64), atol=1e-14)
    if causal:
        assert torch.all(A.triu(1) == 0)


def test_softmax_is_linear_attention_with_exact_exp_kernel():
    # sim = exp(q.k) is a kernel, and softmax attention is its row normalisation (article's starting point)
    q, k, v = _qkv((30, 4), (30, 4), 3, seed=6)
    A = linear_attention_matrix(q.exp()[:, :1] * 0 + 1, k.exp()[:, :1] * 0 + 1)  # constant kernel = average
    assert torch.allclose(A, torch.full((30, 30), 1 / 30, dtype=F64))
    assert _rel_err(softmax_attention(q, k, v, scale=1.0), torch.exp(q @ k.T) @ v / torch.exp(q @ k.T).sum(1, True)) \
        < 1e-13


# ---------------------------------------------------------------- Performer random features
def _exact_kernel_and_var(q, k):
    K = torch.exp(q @ k.T)
    s = (q * q).sum(1)[:, None] + (k * k).sum(1)[None, :]
    qk_sq = ((q[:, None, :] + k[None, :, :]) ** 2).sum(-1)
    var1 = torch.exp(2 * qk_sq - s) - K ** 2          # single-feature variance of the estimate of exp(q.k)
    return K, var1


def test_performer_kernel_unbiased_within_monte_carlo_bound():
    g = _gen(7)
    d, n = 8, 6
    q = 0.3 * torch.randn(n, d, generator=g, dtype=F64)
    k = 0.3 * torch.randn(n, d, generator=g, dtype=F64)
    K, var1 = _exact_kernel_and_var(q, k)
    m = 200_000
    W = torch.randn(m, d, generator=g, dtype=F64)
    K_hat = performer_features(q, W, True, stabilize=False) @ performer_features(k, W, False, stabilize=False).T
    z = (K_hat - K) / torch.sqrt(var1 / m)
    # 36 entries; at this scale X is close to Gaussian-tailed (E X^4 / Var^2 ~ 3-5), so |z| < 5 for all is safe
    assert float(z.abs().max()) < 5.0


def test_performer_attention_converges_to_softmax():
    g = _gen(8)
    d, n, d_v = 8, 16, 4
    q = 0.5 * torch.randn(n, d, generator=g, dtype=F64) / d ** 0.25   # usual 1/sqrt(d) temperature
    k = 0.5 * torch.randn(n, d, generator=g, dtype=F64) / d ** 0.25
    v = torch.randn(n, d_v, generator=g, dtype=F64)
    exact = softmax_attention(q, k, v, scale=1.0)
    K, var1 = _exact_kernel_and_var(q, k)
    errors = []
    for m in (16, 256, 4096, 65536):
        reps = []
        for _ in range(4):
            W = torch.randn(m, d, generator=g, dtype=F64)
            phq, phk = performer_features(q, W, True), performer_features(k, W, False)
            approx = linear_attention(phq, phk, v)
            err = float((approx - exact).abs().max())
            reps.append(err)
            # derived bound: if every kernel entry has relative error <= delta (delta < 1), then every attention
            # weight has relative error <= 2 delta / (1 - delta) and |out - exact| <= that times max|v|
            K_hat = performer_features(q, W, True, stabilize=False) @ performer_features(k, W, False,
                                                                                          stabilize=False).T
            delta = float(((K_hat - K).abs() / K).max())
            if delta < 1:
                assert err <= 2 * delta / (1 - delta) * float(v.abs().max()) + 1e-12
            # and delta itself is a Monte Carlo error: every entry within 6 standard errors (256 correlated entries;
            # only for m >= 4096, where the sum of m lognormal terms is close enough to Gaussian)
            if m >= 4096:
                assert float(((K_hat - K).abs() / torch.sqrt(var1 / m)).max()) < 6.0
        errors.append(float(np.mean(reps)))
    assert all(a > b for a, b in zip(errors, errors[1:])), errors
    # the error shrinks like m^{-1/2}: 4096x more features, about 64x smaller error (allow a factor 3)
    assert errors[0] / errors[-1] > 64 / 3


def test_performer_stabilisation_and_query_norm_are_exact_for_attention():
    g = _gen(9)
    q = 0.5 * torch.randn(2, 20, 8, generator=g, dtype=F64)
    k = 0.5 * torch.randn(2, 20, 8, generator=g, dtype=F64)
    W = torch.randn(32, 8, generator=g, dtype=F64)
    ref = linear_attention_matrix(performer_features(q, W, True, stabilize=False),
                                  performer_features(k, W, False, stabilize=False))
    for phq in (performer_features(q, W, True), performer_features(q, W, True, drop_norm=True),
                performer_features(q, W, True, drop_norm=True, stabilize=False)):
        A = linear_attention_matrix(phq, performer_features(k, W, False))
        assert float((A - ref).abs().max()) < 1e-12
    # dropping the key norm is NOT exact when key norms differ
    A_drop = linear_attention_matrix(performer_features(q, W, True), performer_features(k, W, False, drop_norm=True))
    assert float((A_drop - ref).abs().max()) > 1e-3
    assert bool((performer_features(q, W, True) > 0).all())


def test_gaussian_orthogonal_matrix():
    W = gaussian_orthogonal_matrix(20, 8, _gen(10))
    assert W.shape == (20, 8) and W.dtype == F64
    for start in (0, 8):
        block = W[start:start + 8]
        U = block / block.norm(dim=1, keepdim=True)
        assert torch.allclose(U @ U.T, torch.eye(8, dtype=F64), atol=1e-12)
    # rows are marginally N(0, I): squared norms average d (chi^2_d), checked on many rows
    W_big = gaussian_orthogonal_matrix(4000, 8, _gen(11))
    sq = W_big.norm(dim=1) ** 2
    assert abs(float(sq.mean()) - 8) < 5 * math.sqrt(2 * 8 / 4000)


# ---------------------------------------------------------------- entropies and rank collapse
def test_attention_entropy_matches_scipy():
    g = _gen(12)
    A = torch.rand(3, 50, 40, generator=g, dtype=F64)
    A[0, 0] = 0
    A[0, 0, 5] = 1.0                        # one-hot row: entropy 0
    H = attention_entropy(A, normalized=False, chunk_size=7)
    ref = scipy_entropy(A.numpy(), axis=-1)
    assert np.allclose(H.numpy(), ref, atol=1e-13)
    Hn = attention_entropy(A, chunk_size=7)
    assert np.allclose(Hn.numpy(), ref / math.log(40), atol=1e-13)
    assert float(Hn[0, 0]) == 0.0
    assert float(attention_entropy(torch.ones(4, 9, dtype=F64)).min()) == pytest.approx(1.0, abs=1e-14)


@pytest.mark.parametrize("causal", [False, True])
def test_linear_attention_entropy_matches_matrix(causal):
    g = _gen(13)
    phq = torch.rand(2, 30, 5, generator=g, dtype=F64)
    phk = torch.rand(2, 30, 5, generator=g, dtype=F64)
    H = linear_attention_entropy(phq, phk, normalized=False, causal=causal, chunk_size=7)
    ref = attention_entropy(linear_attention_matrix(phq, phk, causal=causal), normalized=False)
    assert torch.allclose(H, ref, atol=1e-13)
    Hn = linear_attention_entropy(phq, phk, causal=causal, chunk_size=7)
    assert float(Hn.max()) <= 1 + 1e-12


def test_rank_collapse_residual():
    g = _gen(14)
    row = torch.randn(1, 6, generator=g, dtype=F64)
    assert float(rank_collapse_residual(row.expand(10, 6))) < 1e-15
    X = torch.randn(3, 10, 6, generator=g, dtype=F64)
    Xn = X.numpy()
    ref = np.linalg.norm(Xn - Xn.mean(axis=1, keepdims=True), axis=(1, 2)) / np.linalg.norm(Xn, axis=(1, 2))
    assert np.allclose(rank_collapse_residual(X).numpy(), ref, atol=1e-14)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    q, k, v = _qkv((2, 300, 8), (2, 300, 8), 4, seed=15)
    cpu = linear_attention(q.exp(), k.exp(), v, causal=True, chunk_size=64)
    gpu = linear_attention(q.exp().cuda(), k.exp().cuda(), v.cuda(), causal=True, chunk_size=64)
    assert gpu.is_cuda and _rel_err(gpu.cpu(), cpu) < 1e-12
    assert softmax_attention(q.cuda(), k.cuda(), v.cuda(), causal=True).is_cuda


# ---------------------------------------------------------------- validation
def test_validation_errors():
    x = torch.rand(10, 4, dtype=F64)
    v = torch.rand(10, 3, dtype=F64)
    with pytest.raises(ValueError, match="same last dimension"):
        linear_attention(x, torch.rand(10, 5, dtype=F64), v)
    with pytest.raises(ValueError, match="same length"):
        linear_attention(x, x, torch.rand(9, 3, dtype=F64))
    with pytest.raises(ValueError, match="at least 2 dimension"):
        linear_attention(torch.rand(4), x, v)
    with pytest.raises(ValueError, match="chunk_size"):
        linear_attention(x, x, v, causal=True, chunk_size=0)
    with pytest.raises(ValueError, match="as many queries as keys"):
        linear_attention(torch.rand(8, 4, dtype=F64), x, v, causal=True)
    with pytest.raises(ValueError, match="do not broadcast"):
        linear_attention(torch.rand(2, 10, 4), torch.rand(3, 10, 4), v)
    with pytest.raises(ValueError, match="eps"):
        linear_attention(x, x, v, eps=-1.0)
    with pytest.raises(ValueError, match="real-valued"):
        softmax_attention(x.bool(), x, v)
    with pytest.raises(ValueError, match="scale"):
        softmax_attention(x, x, v, scale=float("nan"))
    with pytest.raises(ValueError, match="as many queries as keys"):
        softmax_attention(torch.rand(8, 4), x, v, causal=True)
    with pytest.raises(ValueError, match=r"W must have shape \(m, d\)"):
        performer_features(x, torch.rand(16, 5), True)
    with pytest.raises(ValueError, match="W must have 2"):
        performer_features(x, torch.rand(16), True)
    with pytest.raises(ValueError, match="m must be an integer"):
        gaussian_orthogonal_matrix(0, 4)
    with pytest.raises(ValueError, match="non-negative"):
        attention_entropy(-x)
    with pytest.raises(ValueError, match="at least 2 keys"):
        attention_entropy(torch.ones(3, 1))
    with pytest.raises(ValueError, match="at least one row"):
        rank_collapse_residual(torch.rand(0, 3))
    with pytest.raises(ValueError, match="must be a torch tensor"):
        rank_collapse_residual([[1.0, 2.0]])
