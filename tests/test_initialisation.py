"""Tests of utils.initialisation against naive versions, scipy/torch peers and Monte Carlo."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate, special, stats

from utils.initialisation import (ACTIVATIONS, activation, deep_mlp_second_moments, fan_in_normal,
                                  fan_in_truncated_normal, fan_in_uniform, gaussian_moment,
                                  identity_path_coefficients, init_transformer_params, layer_norm, residual_stack,
                                  rms_norm, softmax_saturation_stats, solve_selu_constants, train_residual_toy,
                                  transformer_stack, truncnorm_variance_factor, uniform_bounds)

SELU_SCALE = 1.0507009873554804934193349852946  # torch.nn.SELU docstring
SELU_ALPHA = 1.6732632423543772848170429916717


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- scalars -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("a,b", [(-2.0, 2.0), (-1.0, 3.0), (0.5, 1.5), (-3.0, -0.2), (2.0, 6.0)])
def test_truncnorm_variance_factor_matches_scipy_and_quadrature(a: float, b: float) -> None:
    gamma = truncnorm_variance_factor(a, b)
    assert gamma == pytest.approx(stats.truncnorm(a, b).var(), rel=1e-10)
    mass = integrate.quad(lambda x: math.exp(-x * x / 2), a, b, epsabs=0, epsrel=1e-13)[0]
    m1 = integrate.quad(lambda x: x * math.exp(-x * x / 2), a, b, epsabs=1e-12, epsrel=1e-13)[0] / mass
    m2 = integrate.quad(lambda x: x * x * math.exp(-x * x / 2), a, b, epsabs=0, epsrel=1e-13)[0] / mass
    assert gamma == pytest.approx(m2 - m1 * m1, rel=1e-9)


def test_truncnorm_symmetric_closed_form() -> None:
    phi2 = math.exp(-2) / math.sqrt(2 * math.pi)
    assert truncnorm_variance_factor() == pytest.approx(1 - 4 * phi2 / (2 * special.ndtr(2) - 1), abs=1e-15)


@pytest.mark.parametrize("a,b", [(2.0, 2.0), (3.0, 1.0), (float("nan"), 1.0), (-np.inf, 1.0), ("x", 1.0)])
def test_truncnorm_variance_factor_rejects_bad_bounds(a: object, b: object) -> None:
    with pytest.raises(ValueError, match="a <|finite|real number"):
        truncnorm_variance_factor(a, b)


def test_gaussian_moment_known_values() -> None:
    assert gaussian_moment(lambda z: z, 2) == pytest.approx(1.0, abs=1e-12)
    assert gaussian_moment(lambda z: z, 4) == pytest.approx(3.0, abs=1e-11)
    assert gaussian_moment(lambda z: max(z, 0.0), 2) == pytest.approx(0.5, abs=1e-12)
    assert gaussian_moment(lambda z: z, 2, scale=3.0) == pytest.approx(9.0, abs=1e-10)
    assert gaussian_moment(special.expit, 1) == pytest.approx(0.5, abs=1e-12)
    # sigmoid second moment vs Monte Carlo (5 standard errors)
    z = np.random.default_rng(0).standard_normal(10**6)
    s = special.expit(z) ** 2
    assert abs(gaussian_moment(special.expit, 2) - s.mean()) < 5 * s.std() / math.sqrt(z.size)


def test_gaussian_moment_validation() -> None:
    with pytest.raises(ValueError, match="callable"):
        gaussian_moment(3.0)
    with pytest.raises(ValueError, match="order"):
        gaussian_moment(np.tanh, 0)
    with pytest.raises(ValueError, match="scale"):
        gaussian_moment(np.tanh, 2, scale=-1.0)


def test_selu_constants_match_torch_and_closed_form() -> None:
    lam, alpha = solve_selu_constants()
    assert abs(lam - SELU_SCALE) < 1e-12 and abs(alpha - SELU_ALPHA) < 1e-12
    # naive closed form: alpha from the mean equation, lambda from the second moment
    e_pos1, e_pos2 = 1 / math.sqrt(2 * math.pi), 0.5
    e_neg1 = math.exp(0.5) * special.ndtr(-1) - 0.5
    e_neg2 = math.exp(2) * special.ndtr(-2) - 2 * math.exp(0.5) * special.ndtr(-1) + 0.5
    alpha_cf = -e_pos1 / e_neg1
    lam_cf = 1 / math.sqrt(e_pos2 + alpha_cf**2 * e_neg2)
    assert alpha == pytest.approx(alpha_cf, rel=1e-12) and lam == pytest.approx(lam_cf, rel=1e-12)
    with pytest.raises(ValueError, match="pair"):
        solve_selu_constants((1.0,))


def test_uniform_bounds() -> None:
    lo, hi = uniform_bounds(0.3, 0.7)
    assert (lo + hi) / 2 == pytest.approx(0.3) and (hi - lo) ** 2 / 12 == pytest.approx(0.49)
    with pytest.raises(ValueError, match="std"):
        uniform_bounds(0.0, 0.0)


# --- initialisers ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("draw", [fan_in_normal, fan_in_uniform, fan_in_truncated_normal])
def test_fan_in_initialisers_variance(draw) -> None:
    w = draw(400, 500, gain=2.0, generator=gen(1), dtype=torch.float64)
    assert w.shape == (400, 500) and w.dtype == torch.float64
    target = 2.0 / 400
    se = target * math.sqrt(2.0 / w.numel())  # roughly, for light-tailed laws
    assert abs(float(w.var()) - target) < 6 * se


def test_truncated_normal_bounds_relative_and_uncorrected_variance() -> None:
    std = math.sqrt(1 / 50)
    w = fan_in_truncated_normal(50, 4000, corrected=False, generator=gen(2), dtype=torch.float64)
    assert float(w.abs().max()) <= 2 * std + 1e-12
    gamma = truncnorm_variance_factor()
    assert float(w.var()) == pytest.approx(gamma * std**2, rel=0.02)
    wc = fan_in_truncated_normal(50, 4000, generator=gen(2), dtype=torch.float64)
    assert float(wc.abs().max()) <= 2 * std / math.sqrt(gamma) + 1e-12
    assert float(wc.var()) == pytest.approx(std**2, rel=0.02)


def test_initialiser_validation() -> None:
    with pytest.raises(ValueError, match="fan_in"):
        fan_in_normal(0, 3)
    with pytest.raises(ValueError, match="gain"):
        fan_in_uniform(3, 3, gain=0.0)
    with pytest.raises(ValueError, match="floating"):
        fan_in_normal(3, 3, dtype=torch.int64)


# --- norms -------------------------------------------------------------------------------------------------------

def naive_layer_norm(x: np.ndarray, eps: float) -> np.ndarray:
    out = np.empty_like(x)
    for idx in np.ndindex(x.shape[:-1]):
        row = x[idx]
        out[idx] = (row - row.mean()) / math.sqrt(row.var() + eps)
    return out


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
def test_norms_match_torch(dtype: torch.dtype, tol: float) -> None:
    x = torch.randn(4, 8, 64, generator=gen(3), dtype=dtype) * 3 + 1
    w, b = torch.randn(64, generator=gen(4), dtype=dtype), torch.randn(64, generator=gen(5), dtype=dtype)
    ref_ln = torch.nn.functional.layer_norm(x, (64,), w, b, eps=1e-6)
    assert torch.allclose(layer_norm(x, w, b, eps=1e-6), ref_ln, atol=tol, rtol=0)
    if hasattr(torch.nn.functional, "rms_norm"):
        ref_rms = torch.nn.functional.rms_norm(x, (64,), w, eps=1e-6)
        assert torch.allclose(rms_norm(x, w, eps=1e-6), ref_rms, atol=tol, rtol=0)
    x64 = x.double().numpy()
    assert np.allclose(layer_norm(x64, eps=1e-6).numpy(), naive_layer_norm(x64, 1e-6), atol=1e-12)
    rms_naive = x64 / np.sqrt((x64**2).mean(-1, keepdims=True) + 1e-6)
    assert np.allclose(rms_norm(x64, eps=1e-6).numpy(), rms_naive, atol=1e-12)


def test_rms_of_centred_is_layer_norm() -> None:
    x = torch.randn(5, 32, generator=gen(6), dtype=torch.float64) + 2
    assert torch.allclose(rms_norm(x - x.mean(-1, keepdim=True)), layer_norm(x), atol=1e-13, rtol=0)


def test_norm_validation() -> None:
    with pytest.raises(ValueError, match="eps"):
        rms_norm(torch.ones(3), eps=-1.0)
    with pytest.raises(ValueError, match="weight has"):
        layer_norm(torch.ones(2, 3), torch.ones(4))
    with pytest.raises(ValueError, match="bias has"):
        layer_norm(torch.ones(2, 3), None, torch.ones(4))
    with pytest.raises(ValueError, match="x must be"):
        rms_norm([1.0, 2.0])


# --- softmax saturation ------------------------------------------------------------------------------------------

def test_softmax_stats_vs_explicit_jacobian() -> None:
    logits = torch.randn(3, 50, 40, generator=gen(7), dtype=torch.float64) * torch.tensor([0.5, 4.0, 20.0])[:, None,
                                                                                                             None]
    st = softmax_saturation_stats(logits, percentiles=(0.0, 50.0, 100.0))
    p = torch.softmax(logits.reshape(-1, 40), -1)
    jac = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]
    fro = jac.pow(2).sum((-1, -2)).sqrt()
    assert torch.allclose(st["jacobian_fro"], fro, rtol=1e-8, atol=1e-15)
    # the closed form from the spec agrees where it does not cancel catastrophically
    s2 = p.pow(2).sum(-1)
    closed = (s2 - 2 * p.pow(3).sum(-1) + s2**2).clamp_min(0).sqrt()
    ok = fro > 1e-4
    assert torch.allclose(st["jacobian_fro"][ok], closed[ok], rtol=1e-6)
    assert st["mean_max_prob"] == pytest.approx(float(p.max(-1).values.mean()), abs=1e-14)
    assert st["frac_saturated"] == pytest.approx(float((p.max(-1).values > 0.99).double().mean()))
    assert st["jacobian_fro_pct"][0.0] == pytest.approx(float(fro.min()), rel=1e-8)
    assert st["jacobian_fro_pct"][100.0] == pytest.approx(float(fro.max()), rel=1e-8)


def test_softmax_stats_uniform_and_float32() -> None:
    st = softmax_saturation_stats(torch.zeros(2, 10, dtype=torch.float32))
    # uniform row: ||diag(p) - p p^T||_F^2 = L (1/L - 1/L^2)^2 + (L^2 - L)/L^4 = (L - 1)/L^2
    assert st["jacobian_fro"][0].item() == pytest.approx(math.sqrt(9 / 100), rel=1e-12)
    assert st["frac_saturated"] == 0.0 and st["mean_max_prob"] == pytest.approx(0.1)


def test_softmax_stats_validation() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        softmax_saturation_stats(torch.zeros(3, 1))
    with pytest.raises(ValueError, match="threshold"):
        softmax_saturation_stats(torch.zeros(3, 4), threshold=1.5)
    with pytest.raises(ValueError, match="finite"):
        softmax_saturation_stats(torch.tensor([[0.0, float("inf")]]))
    with pytest.raises(ValueError, match="percentiles"):
        softmax_saturation_stats(torch.zeros(3, 4), percentiles=(120.0,))


# --- deep MLPs ---------------------------------------------------------------------------------------------------

def test_activation_registry() -> None:
    z = torch.linspace(-3, 3, 13, dtype=torch.float64)
    assert torch.allclose(activation("selu")(z), torch.nn.SELU()(z))
    assert torch.allclose(activation("relu")(z), z.clamp_min(0))
    s2 = gaussian_moment(special.expit, 2)
    assert torch.allclose(activation("rescaled-sigmoid")(z), torch.sigmoid(z) / math.sqrt(s2))
    for name in ACTIVATIONS:
        assert activation(name)(z).shape == z.shape
    with pytest.raises(ValueError, match="activation"):
        activation("swish")


def test_deep_mlp_second_moments_vs_naive_loop() -> None:
    x = torch.randn(64, 32, generator=gen(8), dtype=torch.float64)
    got = deep_mlp_second_moments(x, 5, "tanh", gain=1.5, generator=gen(9))
    g, h, naive = gen(9), x, [float(x.pow(2).mean())]
    for _ in range(5):
        w = torch.randn(32, 32, generator=g, dtype=torch.float64) * math.sqrt(1.5 / 32)
        h = torch.tanh(h @ w)
        naive.append(float(h.pow(2).mean()))
    assert np.allclose(got.numpy(), naive, rtol=1e-12)
    he = deep_mlp_second_moments(torch.randn(512, 256, generator=gen(10)), 10, "relu", generator=gen(11))
    assert 0.2 < float(he[-1] / he[0]) < 5
    with pytest.raises(ValueError, match="law"):
        deep_mlp_second_moments(x, 2, law="cauchy")
    with pytest.raises(ValueError, match="x must have 2"):
        deep_mlp_second_moments(torch.ones(3), 2)


# --- residual stacks ---------------------------------------------------------------------------------------------

def test_residual_stack_modes_vs_naive() -> None:
    x0 = torch.randn(16, 64, generator=gen(12), dtype=torch.float64)
    post = residual_stack(x0, 3, "post", generator=gen(13))
    g, x = gen(13), x0
    for _ in range(3):
        w = torch.randn(64, 64, generator=g, dtype=torch.float64) / 8
        y = x + x @ w
        x = y / y.pow(2).mean(-1, keepdim=True).sqrt()
    assert torch.allclose(post[-1], x, atol=1e-12)
    pre = residual_stack(x0, 3, "pre", generator=gen(13))
    g, x = gen(13), x0
    for _ in range(3):
        w = torch.randn(64, 64, generator=g, dtype=torch.float64) / 8
        x = x + (x / x.pow(2).mean(-1, keepdim=True).sqrt()) @ w
    assert torch.allclose(pre[-1], x, atol=1e-12)
    assert len(post) == 4
    coef = identity_path_coefficients(post)
    assert coef[0] == 1.0 and coef.shape == (4,)


def test_rezero_is_identity_and_passes_gradients() -> None:
    x0 = torch.randn(8, 32, generator=gen(14), requires_grad=True)
    states = residual_stack(x0, 6, "rezero", branch="mlp", width=48, generator=gen(15))
    assert torch.equal(states[-1], x0)
    loss = (states[-1] ** 3).sum()
    g0, gl = torch.autograd.grad(loss, [x0, states[-1]])
    assert torch.equal(g0, gl)
    gates = torch.zeros(6, requires_grad=True)
    states = residual_stack(x0, 6, "rezero", branch="mlp", width=48, alpha=gates, generator=gen(15))
    (grad_gates,) = torch.autograd.grad((states[-1] ** 3).sum(), [gates])
    assert torch.equal(states[-1], x0) and bool((grad_gates != 0).all())


def test_residual_stack_validation() -> None:
    x0 = torch.randn(4, 8)
    with pytest.raises(ValueError, match="mode"):
        residual_stack(x0, 2, "sandwich")
    with pytest.raises(ValueError, match="width"):
        residual_stack(x0, 2, "post", width=16)
    with pytest.raises(ValueError, match="n_layers"):
        residual_stack(x0, 0)
    with pytest.raises(ValueError, match="alpha must be"):
        residual_stack(x0, 2, "rezero", alpha=torch.zeros(3))
    with pytest.raises(ValueError, match="x0 must have 2"):
        residual_stack(torch.randn(8), 2)
    with pytest.raises(ValueError, match="non-empty"):
        identity_path_coefficients([])


# --- Transformer -------------------------------------------------------------------------------------------------

def test_transformer_attention_matches_sdpa_and_stats() -> None:
    d, heads, seq = 32, 4, 10
    params = init_transformer_params(1, d, heads, 64, generator=gen(16), dtype=torch.float64)
    x = torch.randn(2, seq, d, generator=gen(17), dtype=torch.float64)
    out, st = transformer_stack(x, params, n_heads=heads, mode="rezero", alpha=1.0)
    p = params[0]
    split = lambda t: t.reshape(2, seq, heads, d // heads).transpose(1, 2)
    att = torch.nn.functional.scaled_dot_product_attention(split(x @ p["wq"]), split(x @ p["wk"]),
                                                           split(x @ p["wv"]))
    h = x + att.transpose(1, 2).reshape(2, seq, d) @ p["wo"]
    h = h + torch.relu(h @ p["w1"]) @ p["w2"]
    assert torch.allclose(out, h, atol=1e-12)
    assert len(st) == 1 and set(st[0]) >= {"second_moment", "identity_coef", "attn_mean_max_prob"}
    assert st[0]["second_moment"] == pytest.approx(float(h.pow(2).mean()))


def test_transformer_modes() -> None:
    d, heads = 32, 4
    params = init_transformer_params(4, d, heads, generator=gen(18))
    x = torch.randn(3, 12, d, generator=gen(19))
    y, st = transformer_stack(x, params, n_heads=heads, mode="rezero", alpha=0.0)
    assert torch.equal(y, x) and all(s["identity_coef"] == 1.0 for s in st)
    y, st = transformer_stack(x, params, n_heads=heads, mode="post", norm="layer")
    assert torch.allclose(y.mean(-1), torch.zeros(3, 12), atol=1e-5)
    y, st = transformer_stack(x, params, n_heads=heads, mode="pre")
    assert st[-1]["second_moment"] > st[0]["second_moment"]
    t5 = init_transformer_params(1, 256, 4, generator=gen(20), qk_init="t5")
    _, st = transformer_stack(torch.randn(2, 64, 256, generator=gen(21)), t5, n_heads=4, scale_logits=False)
    assert 0.7 < st[0]["logit_std"] < 1.3


def test_transformer_validation() -> None:
    with pytest.raises(ValueError, match="divisible"):
        init_transformer_params(1, 30, 4)
    with pytest.raises(ValueError, match="qk_init"):
        init_transformer_params(1, 32, 4, qk_init="xavier")
    params = init_transformer_params(1, 32, 4)
    with pytest.raises(ValueError, match="x must have 3"):
        transformer_stack(torch.randn(4, 32), params, n_heads=4)
    with pytest.raises(ValueError, match="mode"):
        transformer_stack(torch.randn(1, 4, 32), params, n_heads=4, mode="sandwich")
    with pytest.raises(ValueError, match="d_model"):
        transformer_stack(torch.randn(1, 4, 16), params, n_heads=4)


def test_train_residual_toy_runs_and_validates() -> None:
    losses = train_residual_toy("ramp", n_blocks=3, width=16, steps=20, batch=8, generator=gen(22),
                                data_generator=gen(23))
    assert losses.shape == (20,) and np.all(np.isfinite(losses))
    with pytest.raises(ValueError, match="mode"):
        train_residual_toy("sideways")
    with pytest.raises(ValueError, match="ramp_fraction"):
        train_residual_toy("ramp", ramp_fraction=0.0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_follows_input() -> None:
    g = torch.Generator(device="cuda").manual_seed(0)
    x0 = torch.randn(8, 16, device="cuda", generator=g)
    assert residual_stack(x0, 2, "pre", generator=g)[-1].device.type == "cuda"
    assert rms_norm(x0).device.type == "cuda"
    assert softmax_saturation_stats(x0)["max_prob"].device.type == "cuda"
