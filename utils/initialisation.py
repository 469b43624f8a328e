"""Initialisation, parameterisation and normalisation: Gaussian moments, fan-in initialisers, norms and tiny
residual / Transformer stacks whose forward statistics can be measured layer by layer.

Conventions. A linear layer is ``y = x @ W`` with ``W`` of shape ``(fan_in, fan_out)``; "fan-in scaling" means
``Var(w) = gain / fan_in``. Activations are tensors of shape ``(batch, width)`` (MLPs, residual stacks) or
``(batch, seq, d_model)`` (the Transformer). Torch kernels return tensors on the input's device and dtype (CUDA when
the input lives there); random weights are drawn from the ``generator`` on its device.

* Scalars by quadrature (scipy, float64): :func:`truncnorm_variance_factor`, :func:`gaussian_moment`,
  :func:`solve_selu_constants`, :func:`uniform_bounds`.
* Initialisers: :func:`fan_in_normal`, :func:`fan_in_uniform`, :func:`fan_in_truncated_normal` (TensorFlow-style
  truncation at +-2 standard deviations, variance-corrected).
* Norms: :func:`rms_norm`, :func:`layer_norm` (reference implementations, last axis).
* Statistics: :func:`softmax_saturation_stats`, :func:`deep_mlp_second_moments`, :func:`identity_path_coefficients`.
* Stacks: :func:`residual_stack` (Post-Norm / Pre-Norm / ReZero with random linear or MLP branches),
  :func:`init_transformer_params` + :func:`transformer_stack` (a functional Transformer encoder whose per-layer
  statistics are recorded), :func:`train_residual_toy` (a small regression used to compare residual schemes).
"""
from __future__ import annotations

import math
from functools import lru_cache
from typing import Any, Callable

import numpy as np
import torch
from scipy import integrate, optimize, special

from ._validation import as_float_tensor, finite_float, positive_int

__all__ = ["truncnorm_variance_factor", "gaussian_moment", "solve_selu_constants", "uniform_bounds",
           "fan_in_normal", "fan_in_uniform", "fan_in_truncated_normal", "rms_norm", "layer_norm",
           "softmax_saturation_stats", "activation", "ACTIVATIONS", "deep_mlp_second_moments", "residual_stack",
           "identity_path_coefficients", "init_transformer_params", "transformer_stack", "train_residual_toy"]

ACTIVATIONS = ("linear", "relu", "tanh", "sigmoid", "rescaled-sigmoid", "selu", "gelu")
_MODES = ("post", "pre", "rezero")
_SQRT_2PI = math.sqrt(2.0 * math.pi)


# ----------------------------------------------------------------------------------------------------------------
# scalar helpers (float64, scipy)



def _positive(value: Any, name: str) -> float:
    v = finite_float(value, name)
    if v <= 0:
        raise ValueError(f"{name} must be > 0, got {v}")
    return v


def truncnorm_variance_factor(a: float = -2.0, b: float = 2.0) -> float:
    """Variance of a standard normal conditioned on ``[a, b]`` (the factor gamma of the truncated normal).

    Closed form with Z = Phi(b) - Phi(a): ``1 + (a phi(a) - b phi(b)) / Z - ((phi(a) - phi(b)) / Z)^2``; for the
    symmetric case ``[-c, c]`` this is ``1 - 2 c phi(c) / (2 Phi(c) - 1)``. A normal N(mu, s^2) truncated at
    ``mu + a s, mu + b s`` has variance ``gamma * s^2``.

    Raises:
        ValueError: non-finite bounds or ``a >= b``.
    """
    lo, hi = finite_float(a, "a"), finite_float(b, "b")
    if lo >= hi:
        raise ValueError(f"need a < b, got a={lo}, b={hi}")
    pdf = lambda t: math.exp(-t * t / 2.0) / _SQRT_2PI
    if lo >= 0:  # use survival functions for accuracy in the right tail
        mass = float(special.ndtr(-lo) - special.ndtr(-hi))
    else:
        mass = float(special.ndtr(hi) - special.ndtr(lo))
    if mass <= 0:
        raise ValueError(f"[a, b] = [{lo}, {hi}] carries no normal mass in float64")
    mean = (pdf(lo) - pdf(hi)) / mass
    return 1.0 + (lo * pdf(lo) - hi * pdf(hi)) / mass - mean * mean


def gaussian_moment(f: Callable[[float], float], order: int = 2, *, scale: float = 1.0,
                    epsabs: float = 1e-14) -> float:
    """``E[f(scale * z) ** order]`` for ``z ~ N(0, 1)`` by scipy quadrature (split at 0, float64).

    Args:
        f: a scalar function R -> R (python floats in, float out; numpy ufuncs work).
        order: positive integer power.
        scale: standard deviation of the pre-activation (> 0).
        epsabs: absolute tolerance of each half-line quadrature.

    Raises:
        ValueError: ``f`` not callable, ``order`` < 1, ``scale`` <= 0.
    """
    if not callable(f):
        raise ValueError("f must be callable")
    order = positive_int(order, "order")
    s = _positive(scale, "scale")
    integrand = lambda z: math.exp(-z * z / 2.0) / _SQRT_2PI * float(f(s * z)) ** order
    left = integrate.quad(integrand, -np.inf, 0.0, epsabs=epsabs, epsrel=1e-12, limit=200)[0]
    right = integrate.quad(integrand, 0.0, np.inf, epsabs=epsabs, epsrel=1e-12, limit=200)[0]
    return left + right


def solve_selu_constants(x0: tuple[float, float] = (1.0, 1.5), xtol: float = 1e-14) -> tuple[float, float]:
    """(lambda, alpha) with E[selu(z)] = 0 and E[selu(z)^2] = 1 for z ~ N(0, 1), solved with scipy's fsolve.

    selu(x) = lambda x for x > 0 and lambda alpha (e^x - 1) for x <= 0. The four half-line Gaussian moments are
    computed once by quadrature, so the two equations are polynomial in (lambda, alpha).
    """
    if len(x0) != 2:
        raise ValueError(f"x0 must be a pair (lambda, alpha), got {x0!r}")
    _positive(xtol, "xtol")
    phi = lambda z: math.exp(-z * z / 2.0) / _SQRT_2PI
    quad = lambda g, lo, hi: integrate.quad(lambda z: phi(z) * g(z), lo, hi, epsabs=1e-15, epsrel=1e-13,
                                            limit=200)[0]
    pos1 = quad(lambda z: z, 0.0, np.inf)                    # E[z; z > 0]
    pos2 = quad(lambda z: z * z, 0.0, np.inf)                # E[z^2; z > 0]
    neg1 = quad(lambda z: math.expm1(z), -np.inf, 0.0)       # E[e^z - 1; z <= 0]
    neg2 = quad(lambda z: math.expm1(z) ** 2, -np.inf, 0.0)  # E[(e^z - 1)^2; z <= 0]

    def equations(p: np.ndarray) -> list[float]:
        lam, alpha = p
        return [lam * (pos1 + alpha * neg1), lam * lam * (pos2 + alpha * alpha * neg2) - 1.0]

    sol, info, ier, msg = optimize.fsolve(equations, np.asarray(x0, dtype=float), xtol=xtol, full_output=True)
    if ier != 1 and max(abs(v) for v in info["fvec"]) > 1e-12:
        raise RuntimeError(f"fsolve did not converge: {msg}")
    return float(sol[0]), float(sol[1])


def uniform_bounds(mean: float, std: float) -> tuple[float, float]:
    """Interval ``(mean - sqrt(3) std, mean + sqrt(3) std)`` of the uniform law with that mean and std."""
    mu, s = finite_float(mean, "mean"), _positive(std, "std")
    half = math.sqrt(3.0) * s
    return mu - half, mu + half


# ----------------------------------------------------------------------------------------------------------------
# fan-in initialisers

def _shape_args(fan_in: Any, fan_out: Any, gain: Any, dtype: torch.dtype) -> tuple[int, int, float]:
    fan_in = positive_int(fan_in, "fan_in")
    fan_out = positive_int(fan_out, "fan_out")
    g = _positive(gain, "gain")
    if not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating dtype, got {dtype}")
    return fan_in, fan_out, g


def _dev(device: Any, generator: torch.Generator | None) -> torch.device | None:
    if device is not None:
        return torch.device(device)
    return generator.device if generator is not None else None


def fan_in_normal(fan_in: int, fan_out: int, *, gain: float = 1.0, generator: torch.Generator | None = None,
                  dtype: torch.dtype = torch.float32, device: Any = None) -> torch.Tensor:
    """Weights ``(fan_in, fan_out)`` with i.i.d. N(0, gain / fan_in) entries (LeCun: gain 1, He/ReLU: gain 2).

    ``device`` defaults to the generator's device (CPU without one).
    """
    fan_in, fan_out, g = _shape_args(fan_in, fan_out, gain, dtype)
    w = torch.randn(fan_in, fan_out, generator=generator, dtype=dtype, device=_dev(device, generator))
    return w * math.sqrt(g / fan_in)


def fan_in_uniform(fan_in: int, fan_out: int, *, gain: float = 1.0, generator: torch.Generator | None = None,
                   dtype: torch.dtype = torch.float32, device: Any = None) -> torch.Tensor:
    """Weights ``(fan_in, fan_out)`` i.i.d. U[-sqrt(3 gain / fan_in), +sqrt(3 gain / fan_in)] (variance gain/fan_in)."""
    fan_in, fan_out, g = _shape_args(fan_in, fan_out, gain, dtype)
    u = torch.rand(fan_in, fan_out, generator=generator, dtype=dtype, device=_dev(device, generator))
    return (2.0 * u - 1.0) * math.sqrt(3.0 * g / fan_in)


def fan_in_truncated_normal(fan_in: int, fan_out: int, *, gain: float = 1.0, corrected: bool = True,
                            generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32,
                            device: Any = None) -> torch.Tensor:
    """Weights ``(fan_in, fan_out)`` from a normal truncated at +-2 of ITS OWN standard deviation (TensorFlow style).

    With target std ``s = sqrt(gain / fan_in)``: ``corrected=True`` samples N(0, (s / sqrt(gamma))^2) truncated at
    ``+-2 s / sqrt(gamma)``, whose variance is exactly ``s^2`` (gamma = :func:`truncnorm_variance_factor`);
    ``corrected=False`` truncates N(0, s^2) at ``+-2 s`` (variance ``gamma s^2``). Note that
    ``torch.nn.init.trunc_normal_`` takes ABSOLUTE bounds ``a, b``; this helper passes ``+-2 * std`` to it.
    """
    fan_in, fan_out, g = _shape_args(fan_in, fan_out, gain, dtype)
    std = math.sqrt(g / fan_in)
    if corrected:
        std /= math.sqrt(truncnorm_variance_factor(-2.0, 2.0))
    w = torch.empty(fan_in, fan_out, dtype=dtype, device=_dev(device, generator))
    return torch.nn.init.trunc_normal_(w, mean=0.0, std=std, a=-2.0 * std, b=2.0 * std, generator=generator)


# ----------------------------------------------------------------------------------------------------------------
# norms

def _norm_args(x: Any, weight: Any, eps: Any, name: str = "x") -> tuple[torch.Tensor, torch.Tensor | None, float]:
    x = as_float_tensor(x, name, min_ndim=1)
    e = finite_float(eps, "eps")
    if e < 0:
        raise ValueError(f"eps must be >= 0, got {e}")
    if weight is not None:
        weight = as_float_tensor(weight, "weight", ndim=1)
        if weight.shape[0] != x.shape[-1]:
            raise ValueError(f"weight has {weight.shape[0]} entries but x has {x.shape[-1]} features")
        weight = weight.to(device=x.device, dtype=x.dtype)
    return x, weight, e


def rms_norm(x: Any, weight: Any = None, eps: float = 1e-6) -> torch.Tensor:
    """RMSNorm over the last axis: ``x / sqrt(mean(x^2) + eps) * weight`` (no centring, no bias).

    ``x``: (..., d), any float dtype/device (numpy accepted); ``weight``: (d,) or None; ``eps >= 0`` (0 allowed).
    Same convention as ``torch.nn.functional.rms_norm``.
    """
    x, weight, e = _norm_args(x, weight, eps)
    y = x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + e)
    return y if weight is None else y * weight


def layer_norm(x: Any, weight: Any = None, bias: Any = None, eps: float = 1e-6) -> torch.Tensor:
    """LayerNorm over the last axis: ``(x - mean) / sqrt(var + eps) * weight + bias`` with the biased variance.

    ``x``: (..., d); ``weight``, ``bias``: (d,) or None; ``eps >= 0``. Same convention as
    ``torch.nn.functional.layer_norm(x, (d,), weight, bias, eps)``.
    """
    x, weight, e = _norm_args(x, weight, eps)
    centred = x - x.mean(dim=-1, keepdim=True)
    y = centred * torch.rsqrt(centred.pow(2).mean(dim=-1, keepdim=True) + e)
    if weight is not None:
        y = y * weight
    if bias is not None:
        bias = as_float_tensor(bias, "bias", ndim=1)
        if bias.shape[0] != x.shape[-1]:
            raise ValueError(f"bias has {bias.shape[0]} entries but x has {x.shape[-1]} features")
        y = y + bias.to(device=x.device, dtype=x.dtype)
    return y


# ----------------------------------------------------------------------------------------------------------------
# softmax saturation

def softmax_saturation_stats(logits: Any, *, threshold: float = 0.99,
                             percentiles: tuple[float, ...] = (10.0, 50.0, 90.0)) -> dict[str, Any]:
    """How one-hot the rows of ``softmax(logits)`` are, and how small their Jacobians.

    For each row p = softmax(row) over the last axis, J = diag(p) - p p^T has
    ``||J||_F^2 = sum p^2 - 2 sum p^3 + (sum p^2)^2``. That formula cancels catastrophically for nearly one-hot rows
    (all three terms are ~1), so it is evaluated in float64 in the equivalent form
    ``p_m^2 s_1^2 + sum_{j!=m} p_j^2 (1 - p_j)^2 + 2 p_m^2 s_2 + (s_2^2 - sum_{j!=m} p_j^4)`` with m the argmax,
    ``s_1 = sum_{j!=m} p_j`` (= 1 - p_m without cancellation) and ``s_2 = sum_{j!=m} p_j^2``.

    Args:
        logits: (..., L) with L >= 2, any float dtype/device (computed in float64 on that device).
        threshold: a row is "saturated" when its max probability exceeds this (in (0, 1)).
        percentiles: percentiles (0..100) of ||J||_F to report.

    Returns:
        dict with ``mean_max_prob``, ``frac_saturated`` (floats), ``jacobian_fro_pct`` ({pct: float}),
        ``mean_jacobian_fro`` (float), and per-row tensors ``max_prob``, ``jacobian_fro`` (flattened, float64,
        on the input's device).
    """
    z = as_float_tensor(logits, "logits", min_ndim=1)
    if z.shape[-1] < 2:
        raise ValueError(f"logits need at least 2 entries in the last axis, got shape {tuple(z.shape)}")
    thr = finite_float(threshold, "threshold")
    if not 0.0 < thr < 1.0:
        raise ValueError(f"threshold must lie in (0, 1), got {thr}")
    pcts = [float(q) for q in percentiles]
    if any(not 0.0 <= q <= 100.0 for q in pcts):
        raise ValueError(f"percentiles must lie in [0, 100], got {percentiles!r}")
    rows = z.reshape(-1, z.shape[-1]).to(torch.float64)
    if not torch.isfinite(rows).all():
        raise ValueError("logits must be finite")
    p = torch.softmax(rows, dim=-1)
    p_max, arg = p.max(dim=-1)
    others = p.scatter(-1, arg[:, None], 0.0)          # p with the max entry zeroed
    s1 = others.sum(-1)
    s2 = others.pow(2).sum(-1)
    fro_sq = (p_max**2 * s1**2 + (others**2 * (1.0 - others) ** 2).sum(-1) + 2.0 * p_max**2 * s2
              + (s2**2 - others.pow(4).sum(-1)))
    fro = fro_sq.clamp_min(0.0).sqrt()
    q = torch.quantile(fro, torch.tensor([v / 100.0 for v in pcts], dtype=torch.float64, device=fro.device))
    return {
        "mean_max_prob": float(p_max.mean()),
        "frac_saturated": float((p_max > thr).double().mean()),
        "jacobian_fro_pct": {v: float(w) for v, w in zip(pcts, q)},
        "mean_jacobian_fro": float(fro.mean()),
        "max_prob": p_max,
        "jacobian_fro": fro,
    }


# ----------------------------------------------------------------------------------------------------------------
# deep MLPs

@lru_cache(maxsize=None)
def _sigmoid_second_moment() -> float:
    return gaussian_moment(special.expit, 2)


def activation(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The torch activation called ``name`` (one of :data:`ACTIVATIONS`).

    ``rescaled-sigmoid`` is ``sigmoid(x) / sqrt(E[sigmoid(z)^2])`` (z ~ N(0, 1)), which keeps a unit second moment
    for standard-normal pre-activations; ``gelu`` is the exact (erf) GELU.
    """
    if name == "linear":
        return lambda t: t
    if name == "relu":
        return torch.relu
    if name == "tanh":
        return torch.tanh
    if name == "sigmoid":
        return torch.sigmoid
    if name == "rescaled-sigmoid":
        c = 1.0 / math.sqrt(_sigmoid_second_moment())
        return lambda t: torch.sigmoid(t) * c
    if name == "selu":
        return torch.nn.functional.selu
    if name == "gelu":
        return torch.nn.functional.gelu
    raise ValueError(f"activation must be one of {ACTIVATIONS}, got {name!r}")


def deep_mlp_second_moments(x: Any, n_layers: int, act: str = "relu", *, gain: float | None = None,
                            law: str = "normal", generator: torch.Generator | None = None) -> torch.Tensor:
    """Second moments ``mean(h_l^2)`` of the activations of a bias-free MLP at initialisation.

    ``h_0 = x`` (batch, width); ``h_l = act(h_{l-1} @ W_l)`` with fresh ``W_l`` (width, width) of variance
    ``gain / width`` per layer (``law`` = ``"normal"`` or ``"uniform"``; ``gain`` defaults to 2 for relu, else 1).
    Runs on the generator's device in ``x``'s dtype (``x`` is moved there). Returns a float64 tensor of length
    ``n_layers + 1`` on CPU (entry 0 is the input's second moment).
    """
    h = as_float_tensor(x, "x", ndim=2)
    n_layers = positive_int(n_layers, "n_layers")
    f = activation(act)
    g = (2.0 if act == "relu" else 1.0) if gain is None else _positive(gain, "gain")
    if law not in ("normal", "uniform"):
        raise ValueError(f"law must be 'normal' or 'uniform', got {law!r}")
    draw = fan_in_normal if law == "normal" else fan_in_uniform
    if generator is not None:
        h = h.to(generator.device)
    width = h.shape[1]
    moments = [h.pow(2).mean()]
    with torch.no_grad():
        for _ in range(n_layers):
            h = f(h @ draw(width, width, gain=g, generator=generator, dtype=h.dtype, device=h.device))
            moments.append(h.pow(2).mean())
    return torch.stack(moments).double().cpu()


# ----------------------------------------------------------------------------------------------------------------
# residual stacks

def residual_stack(x0: Any, n_layers: int, mode: str = "post", *, width: int | None = None,
                   branch: str = "linear", alpha: float | torch.Tensor = 0.0, eps: float = 0.0,
                   generator: torch.Generator | None = None) -> list[torch.Tensor]:
    """States ``[x_0, x_1, ..., x_L]`` of a residual stack at initialisation (differentiable).

    Branches ``F_t`` are fresh random functions per layer: ``branch="linear"``: ``F(x) = x @ W`` with W (d, d),
    N(0, 1/d); ``branch="mlp"``: ``F(x) = relu(x @ W1) @ W2`` with W1 (d, width) ~ N(0, 2/d), W2 (width, d) ~
    N(0, 1/width) (He then LeCun, so ``E|F(x)|^2 ~= E|x|^2``). ``Norm`` is :func:`rms_norm` without gain.

    * ``post``:   ``x_{t+1} = Norm(x_t + F_t(x_t))``
    * ``pre``:    ``x_{t+1} = x_t + F_t(Norm(x_t))``
    * ``rezero``: ``x_{t+1} = x_t + alpha_t * F_t(x_t)`` (``alpha = 0``: the identity at initialisation);
      ``alpha`` is one number for every block or a 1-D tensor of ``n_layers`` gates (e.g. learnable, for gradients)

    Args:
        x0: (batch, d) float tensor (numpy accepted); weights are drawn on its device in its dtype.
        n_layers: number of residual blocks L >= 1.
        width: hidden width of the MLP branch (default d); must be None for the linear branch.
        eps: the norm's epsilon (default 0, the pure 'divide by the RMS').
        generator: torch generator on x0's device (or None for the global one).
    """
    x = as_float_tensor(x0, "x0", ndim=2)
    n_layers = positive_int(n_layers, "n_layers")
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
    if branch not in ("linear", "mlp"):
        raise ValueError(f"branch must be 'linear' or 'mlp', got {branch!r}")
    if branch == "linear" and width is not None:
        raise ValueError("width is the hidden width of the 'mlp' branch; leave it None for the linear branch")
    d = x.shape[1]
    hidden = d if width is None else positive_int(width, "width")
    if generator is not None and generator.device != x.device:
        raise ValueError(f"generator lives on {generator.device} but x0 on {x.device}")
    if isinstance(alpha, torch.Tensor) and alpha.ndim > 0:
        if alpha.shape != (n_layers,):
            raise ValueError(f"alpha must be a number or a tensor of shape ({n_layers},), got {tuple(alpha.shape)}")
        gates = list(alpha.unbind())
    else:
        gates = [alpha] * n_layers
    kw = dict(generator=generator, dtype=x.dtype, device=x.device)

    def new_branch() -> Callable[[torch.Tensor], torch.Tensor]:
        if branch == "linear":
            w = fan_in_normal(d, d, **kw)
            return lambda h: h @ w
        w1, w2 = fan_in_normal(d, hidden, gain=2.0, **kw), fan_in_normal(hidden, d, **kw)
        return lambda h: torch.relu(h @ w1) @ w2

    states = [x]
    for t in range(n_layers):
        f = new_branch()
        if mode == "post":
            x = rms_norm(x + f(x), eps=eps)
        elif mode == "pre":
            x = x + f(rms_norm(x, eps=eps))
        else:
            x = x + gates[t] * f(x)
        states.append(x)
    return states


def identity_path_coefficients(states: list[torch.Tensor]) -> torch.Tensor:
    """``c_l = <x_l, x_0>_F / <x_0, x_0>_F`` (Frobenius inner products over the whole array), float64 CPU (L+1,)."""
    if not isinstance(states, (list, tuple)) or len(states) < 1:
        raise ValueError("states must be a non-empty list of tensors")
    x0 = states[0].detach().double()
    ref = (x0 * x0).sum()
    if ref == 0:
        raise ValueError("x_0 is zero")
    return torch.stack([(s.detach().double() * x0).sum() / ref for s in states]).cpu()


# ----------------------------------------------------------------------------------------------------------------
# a tiny functional Transformer encoder

def init_transformer_params(n_layers: int, d_model: int, n_heads: int, d_ff: int | None = None, *,
                            qk_init: str = "lecun", generator: torch.Generator | None = None,
                            dtype: torch.dtype = torch.float32, device: Any = None) -> list[dict[str, torch.Tensor]]:
    """Random weights of ``n_layers`` encoder blocks (no biases, norms without gain), fan-in scaled.

    Per block: ``wq, wk, wv, wo`` (d_model, d_model) ~ N(0, 1/d_model); ``w1`` (d_model, d_ff) ~ N(0, 2/d_model)
    (ReLU feed-forward), ``w2`` (d_ff, d_model) ~ N(0, 1/d_ff). ``qk_init="t5"`` shrinks the variance of ``wq`` and
    ``wk`` by an extra ``1/sqrt(d_head)`` so that unscaled logits q.k have unit variance at initialisation.
    """
    n_layers = positive_int(n_layers, "n_layers")
    d_model = positive_int(d_model, "d_model")
    n_heads = positive_int(n_heads, "n_heads")
    if d_model % n_heads:
        raise ValueError(f"d_model={d_model} is not divisible by n_heads={n_heads}")
    d_ff = 4 * d_model if d_ff is None else positive_int(d_ff, "d_ff")
    if qk_init not in ("lecun", "t5"):
        raise ValueError(f"qk_init must be 'lecun' or 't5', got {qk_init!r}")
    qk_gain = 1.0 if qk_init == "lecun" else 1.0 / math.sqrt(d_model // n_heads)
    kw = dict(generator=generator, dtype=dtype, device=device)
    return [dict(wq=fan_in_normal(d_model, d_model, gain=qk_gain, **kw),
                 wk=fan_in_normal(d_model, d_model, gain=qk_gain, **kw),
                 wv=fan_in_normal(d_model, d_model, **kw), wo=fan_in_normal(d_model, d_model, **kw),
                 w1=fan_in_normal(d_model, d_ff, gain=2.0, **kw), w2=fan_in_normal(d_ff, d_model, **kw))
            for _ in range(n_layers)]


def _attention(x: torch.Tensor, p: dict[str, torch.Tensor], n_heads: int,
               scale_logits: bool) -> tuple[torch.Tensor, torch.Tensor]:
    batch, seq, d = x.shape
    dh = d // n_heads
    heads = lambda t: t.reshape(batch, seq, n_heads, dh).transpose(1, 2)   # (batch, heads, seq, dh)
    q, k, v = heads(x @ p["wq"]), heads(x @ p["wk"]), heads(x @ p["wv"])
    logits = q @ k.transpose(-1, -2)                                        # (batch, heads, seq, seq)
    if scale_logits:
        logits = logits / math.sqrt(dh)
    out = torch.softmax(logits, dim=-1) @ v                                 # (batch, heads, seq, dh)
    return out.transpose(1, 2).reshape(batch, seq, d) @ p["wo"], logits


def transformer_stack(x: Any, params: list[dict[str, torch.Tensor]], *, n_heads: int, mode: str = "post",
                      norm: str = "rms", scale_logits: bool = True, alpha: float | torch.Tensor = 0.0,
                      eps: float = 1e-6, record: bool = True) -> tuple[torch.Tensor, list[dict[str, float]]]:
    """Run a functional Transformer encoder and record per-layer forward statistics.

    Each block has two residual sublayers, multi-head self-attention and a ReLU feed-forward net:

    * ``post``: ``x = N(x + Attn(x)); x = N(x + FFN(x))`` (BERT); ``pre``: ``x = x + Attn(N(x)); x = x + FFN(N(x))``;
      ``rezero``: ``x = x + alpha Attn(x); x = x + alpha FFN(x)`` (no norm).
    * ``N`` is :func:`rms_norm` (``norm="rms"``) or :func:`layer_norm` (``norm="layer"``), without gain.

    Args:
        x: (batch, seq, d_model); params from :func:`init_transformer_params` (moved to x's device/dtype).
        scale_logits: divide q.k by sqrt(d_head) (BERT); False leaves logits unscaled.
        record: collect statistics (else the list is empty).

    Returns:
        ``(output, stats)`` with one dict per block: ``second_moment`` (of the block output),
        ``identity_coef`` (<x_l, x_0>/<x_0, x_0>), ``attn_mean_max_prob``, ``attn_frac_saturated`` (rows with max
        probability > 0.99) and ``logit_std``.
    """
    h = as_float_tensor(x, "x", ndim=3)
    n_heads = positive_int(n_heads, "n_heads")
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
    if norm not in ("rms", "layer"):
        raise ValueError(f"norm must be 'rms' or 'layer', got {norm!r}")
    if h.shape[-1] % n_heads:
        raise ValueError(f"d_model={h.shape[-1]} is not divisible by n_heads={n_heads}")
    if not isinstance(params, (list, tuple)) or not params:
        raise ValueError("params must be a non-empty list of weight dicts")
    nrm = (lambda t: rms_norm(t, eps=eps)) if norm == "rms" else (lambda t: layer_norm(t, eps=eps))
    x0 = h.detach()
    ref = (x0 * x0).sum()
    stats: list[dict[str, float]] = []
    for p in params:
        missing = {"wq", "wk", "wv", "wo", "w1", "w2"} - set(p)
        if missing:
            raise ValueError(f"block parameters miss {sorted(missing)}")
        p = {k: v.to(device=h.device, dtype=h.dtype) for k, v in p.items()}
        if p["wq"].shape[0] != h.shape[-1]:
            raise ValueError(f"weights expect d_model={p['wq'].shape[0]}, x has {h.shape[-1]}")
        ffn = lambda t: torch.relu(t @ p["w1"]) @ p["w2"]
        if mode == "post":
            a, logits = _attention(h, p, n_heads, scale_logits)
            h = nrm(h + a)
            h = nrm(h + ffn(h))
        elif mode == "pre":
            a, logits = _attention(nrm(h), p, n_heads, scale_logits)
            h = h + a
            h = h + ffn(nrm(h))
        else:
            a, logits = _attention(h, p, n_heads, scale_logits)
            h = h + alpha * a
            h = h + alpha * ffn(h)
        if record:
            with torch.no_grad():
                pmax = torch.softmax(logits.double(), dim=-1).amax(dim=-1)
                stats.append(dict(second_moment=float(h.pow(2).mean()),
                                  identity_coef=float((h.detach() * x0).sum() / ref),
                                  attn_mean_max_prob=float(pmax.mean()),
                                  attn_frac_saturated=float((pmax > 0.99).double().mean()),
                                  logit_std=float(logits.double().std())))
    return h, stats


# ----------------------------------------------------------------------------------------------------------------
# a toy training run of residual schemes

def train_residual_toy(mode: str, *, n_blocks: int = 16, width: int = 64, steps: int = 200, batch: int = 64,
                       lr: float = 1e-3, ramp_fraction: float = 0.3, generator: torch.Generator | None = None,
                       data_generator: torch.Generator | None = None) -> np.ndarray:
    """Train a residual ReLU-MLP regressor with Adam and return its training loss per step (numpy, float64).

    Blocks ``F(x) = relu(x W1) W2`` (He / LeCun init, no biases), input = width features, a linear read-out.
    ``mode``: ``"post"`` (x = Norm(x + F(x))), ``"pre"`` (x = x + F(Norm(x)), final Norm before the read-out),
    ``"rezero"`` (x = x + a_t F(x), learnable a_t initialised at 0, no norm) or ``"ramp"`` (Post-Norm with a gated
    branch, x = Norm(x + a F(x)), with the fixed schedule ``a = min(1, step / (ramp_fraction * steps))``, not
    learned: the identity at the start, plain Post-Norm once ``a`` reaches 1). Targets come from a fixed random
    two-layer tanh teacher; a fresh batch is drawn each step from ``data_generator`` (CPU float32).
    """
    if mode not in ("post", "pre", "rezero", "ramp"):
        raise ValueError(f"mode must be one of ('post', 'pre', 'rezero', 'ramp'), got {mode!r}")
    n_blocks, width = positive_int(n_blocks, "n_blocks"), positive_int(width, "width")
    steps, batch = positive_int(steps, "steps"), positive_int(batch, "batch")
    lr = _positive(lr, "lr")
    ramp = finite_float(ramp_fraction, "ramp_fraction")
    if not 0.0 < ramp <= 1.0:
        raise ValueError(f"ramp_fraction must lie in (0, 1], got {ramp}")
    kw = dict(generator=generator, dtype=torch.float32, device="cpu")
    blocks = [(fan_in_normal(width, width, gain=2.0, **kw).requires_grad_(),
               fan_in_normal(width, width, **kw).requires_grad_()) for _ in range(n_blocks)]
    readout = fan_in_normal(width, 1, **kw).requires_grad_()
    gates = torch.zeros(n_blocks, requires_grad=(mode == "rezero"))
    teacher1 = fan_in_normal(width, width, **kw)
    teacher2 = fan_in_normal(width, 1, **kw)
    params = [w for pair in blocks for w in pair] + [readout] + ([gates] if mode == "rezero" else [])
    opt = torch.optim.Adam(params, lr=lr)
    losses = np.empty(steps)
    for step in range(steps):
        x = torch.randn(batch, width, generator=data_generator)
        y = torch.tanh(x @ teacher1) @ teacher2
        h = x
        a = min(1.0, step / (ramp * steps))
        for t, (w1, w2) in enumerate(blocks):
            if mode == "post":
                h = rms_norm(h + torch.relu(h @ w1) @ w2)
            elif mode == "pre":
                h = h + torch.relu(rms_norm(h) @ w1) @ w2
            elif mode == "rezero":
                h = h + gates[t] * (torch.relu(h @ w1) @ w2)
            else:
                h = rms_norm(h + a * (torch.relu(h @ w1) @ w2))
        if mode == "pre":
            h = rms_norm(h)
        loss = ((h @ readout - y) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses[step] = float(loss.detach())
    return losses
