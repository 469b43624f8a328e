"""Tests of utils.sinusoidal against naive versions and scipy/torch peers."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate, linalg

from utils.sinusoidal import (complex_order_embedding, conv_stack_output, count_distinct_columns, counting_rnn,
                              embedding_stats, exp_integral_first_zero, mean_lagged_inner_product,
                              oscillatory_integral, sinusoidal_ode_matrix, taylor_two_rows, theta_moment)


def _quad_cos(profile, delta):
    return integrate.quad(lambda t: math.cos(delta * profile(t)), 0, 1, limit=5000, epsabs=1e-13, epsrel=1e-13)[0]


@pytest.mark.parametrize("delta", [0.0, 0.5, 3.0, 50.0, 500.0])
def test_closed_forms_match_quad(delta):
    assert oscillatory_integral(None, delta, "closed_exp", base=1e4) == pytest.approx(
        _quad_cos(lambda t: 1e4 ** -t, delta), abs=1e-10)
    assert oscillatory_integral(None, delta, "fresnel") == pytest.approx(_quad_cos(lambda t: t * t, delta), abs=1e-9)
    assert oscillatory_integral(lambda t: t, delta) == pytest.approx(
        1.0 if delta == 0 else math.sin(delta) / delta, abs=1e-12)


def test_integral_even_and_shape():
    deltas = np.array([[-5.0, 5.0], [-120.0, 120.0]])
    out = oscillatory_integral(None, deltas, "closed_exp", base=1000.0)
    assert out.shape == (2, 2) and out.dtype == np.float64
    np.testing.assert_allclose(out[:, 0], out[:, 1], atol=0)
    out_t = oscillatory_integral(None, torch.tensor([0.0, 1.0]), "fresnel")
    assert out_t[0] == 1.0


def test_riemann_sum_converges_to_integral():
    # (2/d) sum_i cos(Delta b^{-2i/d}) -> I_b(Delta) as d grows (naive sum written out here)
    delta = 128.0
    exact = oscillatory_integral(None, delta, "closed_exp", base=1e4)
    errs = [abs(np.cos(delta * 1e4 ** (-2 * np.arange(d // 2) / d)).mean() - exact) for d in (128, 512, 4096)]
    assert errs[0] > errs[1] > errs[2]


def test_first_zero():
    zero = exp_integral_first_zero(1e4, (0.5, 0.7))
    assert oscillatory_integral(None, zero, "closed_exp", base=1e4) == pytest.approx(0, abs=1e-12)
    assert zero == pytest.approx(exp_integral_first_zero(1e4), abs=1e-6)
    assert abs(zero / 1e4 - 0.6165) < 0.01
    values = oscillatory_integral(None, np.linspace(1, zero - 1, 500), "closed_exp", base=1e4)
    assert values.min() > 0  # it is the FIRST zero


@pytest.mark.parametrize("family,param", [("power", 1.0), ("power", 3.0), ("exp", 1e4)])
def test_theta_moment_matches_quadrature(family, param):
    profile = (lambda t: t ** param) if family == "power" else (lambda t: param ** -t)
    for p in (1, 2, 4):
        ref = integrate.quad(lambda t: profile(t) ** p, 0, 1, epsabs=1e-14)[0]
        assert theta_moment(p, family, param) == pytest.approx(ref, rel=1e-10)


def test_taylor_two_rows_is_third_order():
    g = torch.Generator().manual_seed(0)
    A = torch.randn(3, 3, generator=g, dtype=torch.float64)
    X = torch.randn(4, 3, generator=g, dtype=torch.float64)
    P = torch.randn(2, 3, generator=g, dtype=torch.float64)

    def f(Z):
        return torch.tanh(Z @ A @ Z.T).sum() + torch.sin(Z).sum()

    r1 = taylor_two_rows(f, X, 0, 2, 0.01 * P[0], 0.01 * P[1])["remainder"]
    r2 = taylor_two_rows(f, X, 0, 2, 0.005 * P[0], 0.005 * P[1])["remainder"]
    assert 5 < r1 / r2 < 11
    # for a quadratic f the expansion is exact, and the cross term is p_m^T (B + B^T) p_n
    B = torch.randn(3, 3, generator=g, dtype=torch.float64)
    terms = taylor_two_rows(lambda Z: Z[0] @ B @ Z[1], X, 0, 1, P[0], P[1])
    assert terms["remainder"] < 1e-12
    assert terms["cross"] == pytest.approx(float(P[0] @ B @ P[1]), abs=1e-12)


def test_embedding_stats_naive():
    rng = np.random.default_rng(0)
    M = rng.normal(size=(200, 6)) * np.arange(1, 7)
    stats = embedding_stats(M)
    C = np.cov(M, rowvar=False)
    off = np.abs(C[~np.eye(6, dtype=bool)])
    assert stats["mean_norm"] == pytest.approx(np.mean([np.sqrt(r @ r) for r in M]))
    assert stats["diag_offdiag_ratio"] == pytest.approx(np.abs(np.diag(C)).mean() / off.mean())
    naive_dominant = sum(abs(C[i, i]) > sum(abs(C[i, j]) for j in range(6) if j != i) for i in range(6))
    assert stats["dominant_rows"] == naive_dominant
    assert embedding_stats(torch.from_numpy(rng.normal(size=(20000, 3))))["dominant_rows"] == 3


def test_mean_lagged_inner_product_naive():
    P = np.random.default_rng(1).normal(size=(20, 4))
    lags = np.array([0, 1, 5, 19])
    naive = [np.mean([P[k] @ P[k + lag] for k in range(20 - lag)]) for lag in lags]
    np.testing.assert_allclose(mean_lagged_inner_product(P, lags), naive, rtol=1e-12)


def test_ode_matrix_generates_sinusoids():
    d = 8
    W = sinusoidal_ode_matrix(d)
    freqs = 1e4 ** (-np.arange(0, d, 2) / d)
    p0 = np.tile([0.0, 1.0], d // 2)
    for t in (0.0, 1.0, 7.5):
        expected = np.stack([np.sin(t * freqs), np.cos(t * freqs)], axis=1).reshape(-1)
        np.testing.assert_allclose(linalg.expm(t * W) @ p0, expected, atol=1e-12)
    np.testing.assert_allclose(W, -W.T, atol=0)


def test_complex_order_shift_is_rotation():
    rng = np.random.default_rng(2)
    r, w, th = rng.random(5), rng.normal(size=5), rng.normal(size=5)
    emb = complex_order_embedding(r, w, th, np.arange(10))
    assert emb.shape == (10, 5) and emb.dtype == np.complex128
    np.testing.assert_allclose(emb[3:], emb[:7] * np.exp(1j * w * 3), atol=1e-12)
    np.testing.assert_allclose(np.abs(emb), np.broadcast_to(r, (10, 5)), atol=1e-12)


def test_conv_stack_padding():
    circ = conv_stack_output(3, "circular", seed=1)
    assert np.ptp(circ, axis=1).max() < 1e-12
    zeros = conv_stack_output(3, "zeros", seed=1)
    assert zeros.shape == (8, 32)
    assert count_distinct_columns(zeros) == 7
    assert count_distinct_columns(circ) == 1


def test_counting_rnn():
    assert torch.equal(counting_rnn(16), torch.arange(1, 17, dtype=torch.float32))


def test_bad_input_raises():
    with pytest.raises(ValueError, match="method"):
        oscillatory_integral(None, 1.0, "simpson")
    with pytest.raises(ValueError, match="base"):
        oscillatory_integral(None, 1.0, "closed_exp")
    with pytest.raises(ValueError, match="base"):
        oscillatory_integral(None, 1.0, "closed_exp", base=0.5)
    with pytest.raises(ValueError, match="callable"):
        oscillatory_integral(None, 1.0, "quad")
    with pytest.raises(ValueError, match="finite"):
        oscillatory_integral(None, np.inf, "fresnel")
    with pytest.raises(ValueError, match="sign"):
        exp_integral_first_zero(1e4, (0.1, 0.2))
    with pytest.raises(ValueError, match="family"):
        theta_moment(2, "log", 2.0)
    with pytest.raises(ValueError, match="alpha"):
        theta_moment(2, "power", -1.0)
    with pytest.raises(ValueError, match="different"):
        taylor_two_rows(lambda Z: Z.sum(), torch.zeros(3, 2), 1, 1, torch.zeros(2), torch.zeros(2))
    with pytest.raises(ValueError, match="row index"):
        taylor_two_rows(lambda Z: Z.sum(), torch.zeros(3, 2), 0, 5, torch.zeros(2), torch.zeros(2))
    with pytest.raises(ValueError, match="entries"):
        taylor_two_rows(lambda Z: Z.sum(), torch.zeros(3, 2), 0, 1, torch.zeros(3), torch.zeros(2))
    with pytest.raises(ValueError, match="2-D"):
        embedding_stats(np.zeros(5))
    with pytest.raises(ValueError, match="lags"):
        mean_lagged_inner_product(np.zeros((5, 2)), [5])
    with pytest.raises(ValueError, match="integers"):
        mean_lagged_inner_product(np.zeros((5, 2)), [0.5])
    with pytest.raises(ValueError, match="even"):
        sinusoidal_ode_matrix(7)
    with pytest.raises(ValueError, match="same shape"):
        complex_order_embedding(np.ones(3), np.ones(2), np.ones(3), [0, 1])
    with pytest.raises(ValueError, match="padding_mode"):
        conv_stack_output(2, "mirror")
    with pytest.raises(ValueError, match="num_layers"):
        conv_stack_output(0, "zeros")
    with pytest.raises(ValueError, match="length"):
        counting_rnn(0)


def test_minilm_tables_match_safetensors():
    pytest.importorskip("transformers")
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    from utils.encoder import minilm_config, minilm_path
    from utils.sinusoidal import minilm_embedding_tables

    word, position = minilm_embedding_tables()
    cfg = minilm_config()
    assert word.shape == (cfg["vocab_size"], cfg["hidden_size"]) and word.dtype == np.float64
    assert position.shape == (cfg["max_position_embeddings"], cfg["hidden_size"])
    raw = safetensors_numpy.load_file(str(minilm_path() / "model.safetensors"))
    key = [k for k in raw if k.endswith("embeddings.position_embeddings.weight")][0]
    np.testing.assert_array_equal(position, raw[key].astype(np.float64))


def test_t5_buckets_match_transformers_peer():
    # the survey chapter's T5 table comes from utils.positions; check it against transformers as a peer
    pytest.importorskip("transformers")
    from transformers.models.t5.modeling_t5 import T5Attention

    from utils.positions import t5_relative_position_bucket

    offsets = torch.arange(1000)
    for rel in (-offsets, offsets):  # keys left of the query (i - j >= 0), then to the right
        ours = t5_relative_position_bucket(rel, bidirectional=True, num_buckets=32, max_distance=128)
        peer = T5Attention._relative_position_bucket(rel, bidirectional=True, num_buckets=32, max_distance=128)
        assert torch.equal(ours, peer)
    article = [0, 1, 2, 3, 4, 5, 6, 7, 8, 8, 8, 8, 9, 9, 9, 9] + [10] * 7 + [11] * 8
    assert t5_relative_position_bucket(-torch.arange(31)).tolist() == article
