"""Helpers of the sinusoidal-encoding chapters that are not position-encoding tables.

The tables themselves (``sinusoidal_pe``, ``sinusoidal_gram``, ``sinusoidal_shift_matrix``, T5 buckets, ...) live in
:mod:`utils.positions`. This module holds the analysis around them:

* the oscillatory integrals ``I_theta(Delta) = int_0^1 cos(Delta * theta_t) dt`` that the discrete sum
  ``(2/d) sum_i cos(Delta theta_i)`` approximates, with closed forms for ``theta_t = b^{-t}`` (sine/cosine integrals)
  and ``theta_t = t^2`` (Fresnel integral), ``quad`` otherwise (:func:`oscillatory_integral`,
  :func:`exp_integral_first_zero`, :func:`theta_moment`);
* a second-order Taylor expansion of a scalar function of a token matrix in two of its rows (:func:`taylor_two_rows`);
* statistics of embedding matrices and the MiniLM embedding tables (:func:`embedding_stats`,
  :func:`mean_lagged_inner_product`, :func:`minilm_embedding_tables`);
* small constructions of the survey chapter: the linear ODE whose solution is the sinusoidal encoding
  (:func:`sinusoidal_ode_matrix`), Complex Order embeddings (:func:`complex_order_embedding`), a convolution stack for
  the zero-padding experiment (:func:`conv_stack_output`, :func:`count_distinct_columns`) and a counting RNN
  (:func:`counting_rnn`).

Nothing here does I/O at import time; :func:`minilm_embedding_tables` reads the bundled model when called.
"""
from __future__ import annotations

import functools
import math
import os
from typing import Any, Callable

import numpy as np
import torch

from ._validation import as_float_tensor, finite_float, positive_int

__all__ = ["oscillatory_integral", "exp_integral_first_zero", "theta_moment", "taylor_two_rows", "embedding_stats",
           "mean_lagged_inner_product", "minilm_embedding_tables", "sinusoidal_ode_matrix", "complex_order_embedding",
           "conv_stack_output", "count_distinct_columns", "counting_rnn", "INTEGRAL_METHODS"]

INTEGRAL_METHODS = ("quad", "closed_exp", "fresnel")




def _base(value: Any) -> float:
    base = finite_float(value, "base")
    if base <= 1.0:
        raise ValueError(f"base must be a finite number > 1, got {base}")
    return base


def _deltas(delta: Any) -> np.ndarray:
    if isinstance(delta, torch.Tensor):
        delta = delta.detach().cpu().numpy()
    try:
        arr = np.asarray(delta, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"delta must be numeric, got {type(delta).__name__}") from None
    if not np.all(np.isfinite(arr)):
        raise ValueError("delta must be finite")
    return arr


def oscillatory_integral(theta: Callable[[float], float] | None, delta: Any, method: str = "quad", *,
                         base: float | None = None, limit: int = 5000, epsabs: float = 1e-13,
                         epsrel: float = 1e-13) -> np.ndarray:
    """``I_theta(Delta) = int_0^1 cos(Delta * theta(t)) dt`` for every offset ``Delta`` (the continuous limit of the
    normalised sinusoidal Gram ``(2/d) sum_i cos(Delta theta_i)``).

    Args:
        theta: the frequency profile ``t -> theta_t`` on ``[0, 1]`` (a scalar Python callable); needed by
            ``method="quad"``, ignored (may be ``None``) by the closed forms.
        delta: offsets, any shape (numpy array, tensor, list or number); real and finite.
        method: ``"quad"`` (``scipy.integrate.quad`` per offset, adaptive, slow for large ``|Delta|``),
            ``"closed_exp"`` (``theta_t = base^{-t}``: ``[Ci(|Delta|) - Ci(|Delta|/base)] / ln base``, 1 at
            ``Delta = 0``) or ``"fresnel"`` (``theta_t = t^2``: ``sqrt(pi/(2|Delta|)) C(sqrt(2|Delta|/pi))``).
        base: the base ``b > 1`` of ``"closed_exp"``.
        limit, epsabs, epsrel: passed to ``quad``.

    Returns:
        float64 numpy array with the shape of ``delta`` (the integral is even in ``Delta``).
    """
    from scipy import integrate, special

    if method not in INTEGRAL_METHODS:
        raise ValueError(f"method must be one of {INTEGRAL_METHODS}, got {method!r}")
    d = np.abs(_deltas(delta))
    out = np.ones_like(d)  # every profile gives 1 at Delta = 0
    nz = d > 0
    if method == "closed_exp":
        if base is None:
            raise ValueError("method='closed_exp' needs base (theta_t = base ** -t)")
        b = _base(base)
        _, ci_hi = special.sici(d[nz])
        _, ci_lo = special.sici(d[nz] / b)
        out[nz] = (ci_hi - ci_lo) / math.log(b)
    elif method == "fresnel":
        z = np.sqrt(2.0 * d[nz] / math.pi)
        _, fresnel_c = special.fresnel(z)  # scipy returns (S, C)
        out[nz] = np.sqrt(math.pi / (2.0 * d[nz])) * fresnel_c
    else:
        if not callable(theta):
            raise ValueError("method='quad' needs a callable theta(t)")
        limit = positive_int(limit, "limit")
        flat_in, flat_out = d.reshape(-1), out.reshape(-1)
        for k, value in enumerate(flat_in):
            if value > 0:
                flat_out[k] = integrate.quad(lambda t, v=value: math.cos(v * theta(t)), 0.0, 1.0, limit=limit,
                                             epsabs=epsabs, epsrel=epsrel)[0]
        out = flat_out.reshape(d.shape)
    return out


def exp_integral_first_zero(base: float, bracket: tuple[float, float] | None = None) -> float:
    """First positive zero of ``I_b(Delta) = int_0^1 cos(Delta b^{-t}) dt`` (closed form, ``scipy.optimize.brentq``).

    For large ``b`` it lies near ``0.6165 b`` (where ``Ci(Delta/b) = 0``, since ``Ci(Delta)`` is then tiny).

    Args:
        base: ``b > 1``.
        bracket: the search interval as fractions of ``b`` (``I_b`` must change sign on it, else ``ValueError``);
            ``None`` scans ``(0, 2b]`` on a grid of 4000 points for the first sign change.

    Returns:
        The zero ``Delta_0`` (float).
    """
    from scipy import optimize

    b = _base(base)

    def f(x: float) -> float:
        return float(oscillatory_integral(None, x, "closed_exp", base=b))

    if bracket is None:
        grid = np.linspace(0.0, 2.0 * b, 4001)[1:]
        values = oscillatory_integral(None, grid, "closed_exp", base=b)
        change = np.flatnonzero(np.sign(values[:-1]) != np.sign(values[1:]))
        if values[0] <= 0 or change.size == 0:
            raise ValueError(f"no sign change of I_b found on (0, 2b] for base {b:g}")
        lo, hi = grid[change[0]], grid[change[0] + 1]
    else:
        lo, hi = (finite_float(v, "bracket") * b for v in bracket)
        if not 0 < lo < hi:
            raise ValueError(f"bracket must be two increasing positive fractions, got {bracket}")
        if f(lo) * f(hi) > 0:
            raise ValueError(f"I_b does not change sign on [{lo:g}, {hi:g}] for base {b:g}; widen the bracket")
    return float(optimize.brentq(f, lo, hi, xtol=1e-12, rtol=1e-14))


def theta_moment(p: int, family: str, param: float) -> float:
    """``E_t[theta_t^p]`` for ``t ~ U(0, 1)``: ``1/(p alpha + 1)`` for ``theta_t = t^alpha`` (``family="power"``,
    ``param=alpha > 0``) and ``(1 - b^{-p}) / (p ln b)`` for ``theta_t = b^{-t}`` (``family="exp"``, ``param=b > 1``).

    These give the small-offset expansion ``I(Delta) = 1 - Delta^2 E[theta^2]/2 + Delta^4 E[theta^4]/24 - ...``.
    """
    p = positive_int(p, "p")
    if family == "power":
        alpha = finite_float(param, "alpha")
        if alpha <= 0:
            raise ValueError(f"alpha must be > 0, got {alpha}")
        return 1.0 / (p * alpha + 1.0)
    if family == "exp":
        b = _base(param)
        return (1.0 - b ** (-p)) / (p * math.log(b))
    raise ValueError(f"family must be 'power' or 'exp', got {family!r}")


def taylor_two_rows(f: Callable[[torch.Tensor], torch.Tensor], X: Any, m: int, n: int, p_m: Any,
                    p_n: Any) -> dict[str, float]:
    """Second-order Taylor expansion of a scalar ``f`` of a token matrix ``X`` (n_tokens, d) when only rows ``m``
    and ``n`` are perturbed by ``p_m`` and ``p_n``.

    The six terms are ``f(X)``, ``p_m^T g_m``, ``p_n^T g_n``, ``p_m^T H_mm p_m / 2``, ``p_n^T H_nn p_n / 2`` and
    the interaction ``p_m^T H_mn p_n`` (``H_mn = d^2 f / dx_m dx_n``; the two mixed blocks are transposes, so they add
    up to one such term). Gradient and Hessian come from ``torch.autograd.functional``.

    Args:
        f: maps a float64 tensor of shape (n_tokens, d) to a scalar tensor.
        X: the expansion point, (n_tokens, d) (computed in float64).
        m, n: two distinct row indices.
        p_m, p_n: perturbations of shape (d,).

    Returns:
        dict with the six terms (``"f"``, ``"lin_m"``, ``"lin_n"``, ``"quad_m"``, ``"quad_n"``, ``"cross"``), their
        sum ``"taylor2"``, the exact ``"perturbed"`` value and ``"remainder" = |perturbed - taylor2|``.
    """
    X = as_float_tensor(X, "X", ndim=2).to(torch.float64)
    n_tokens, dim = X.shape
    for name, idx in (("m", m), ("n", n)):
        if isinstance(idx, bool) or not isinstance(idx, (int, np.integer)) or not 0 <= idx < n_tokens:
            raise ValueError(f"{name} must be a row index in [0, {n_tokens}), got {idx!r}")
    if m == n:
        raise ValueError("m and n must be different rows")
    p_m = as_float_tensor(p_m, "p_m", ndim=1).to(torch.float64)
    p_n = as_float_tensor(p_n, "p_n", ndim=1).to(torch.float64)
    if p_m.shape[0] != dim or p_n.shape[0] != dim:
        raise ValueError(f"p_m and p_n must have {dim} entries, got {p_m.shape[0]} and {p_n.shape[0]}")
    grad = torch.autograd.functional.jacobian(f, X)      # (n_tokens, d)
    hess = torch.autograd.functional.hessian(f, X)       # (n_tokens, d, n_tokens, d)
    terms = {
        "f": float(f(X)),
        "lin_m": float(p_m @ grad[m]),
        "lin_n": float(p_n @ grad[n]),
        "quad_m": float(p_m @ hess[m, :, m, :] @ p_m) / 2,
        "quad_n": float(p_n @ hess[n, :, n, :] @ p_n) / 2,
        "cross": float(p_m @ hess[m, :, n, :] @ p_n),
    }
    terms["taylor2"] = sum(terms.values())
    perturbed = X.clone()
    perturbed[m] += p_m
    perturbed[n] += p_n
    terms["perturbed"] = float(f(perturbed))
    terms["remainder"] = abs(terms["perturbed"] - terms["taylor2"])
    return terms


def _matrix(M: Any, name: str = "M") -> np.ndarray:
    if isinstance(M, torch.Tensor):
        M = M.detach().cpu().numpy()
    M = np.asarray(M)
    if M.ndim != 2 or M.shape[0] < 2 or M.shape[1] < 2:
        raise ValueError(f"{name} must be a 2-D matrix with at least 2 rows and 2 columns, got shape {M.shape}")
    if not np.issubdtype(M.dtype, np.floating) and not np.issubdtype(M.dtype, np.integer):
        raise ValueError(f"{name} must be real-valued, got dtype {M.dtype}")
    return M.astype(np.float64)


def embedding_stats(M: Any) -> dict[str, Any]:
    """Size and covariance structure of an embedding matrix (rows = items, columns = dimensions).

    Args:
        M: (num_rows, dim) real matrix (numpy or torch, any float dtype; computed in float64 on the CPU).

    Returns:
        dict with ``mean_norm`` (mean Euclidean row norm), ``cov`` (dim x dim covariance, ``np.cov(M.T)``),
        ``diag_offdiag_ratio`` (mean |diagonal| / mean |off-diagonal entry|, all i != j),
        ``dominant_rows`` (number of rows i of the covariance with |C_ii| > sum_{j != i} |C_ij|, i.e. strict row
        diagonal dominance) and ``shape``.
    """
    M = _matrix(M)
    cov = np.cov(M.T)  # (dim, dim); rows of M are the samples
    abs_cov = np.abs(cov)
    diag = np.diag(abs_cov)
    off_sum = abs_cov.sum(axis=1) - diag
    dim = cov.shape[0]
    return {
        "shape": M.shape,
        "mean_norm": float(np.linalg.norm(M, axis=1).mean()),
        "cov": cov,
        "diag_offdiag_ratio": float(diag.mean() / (off_sum.sum() / (dim * (dim - 1)))),
        "dominant_rows": int(np.sum(diag > off_sum)),
    }


def mean_lagged_inner_product(P: Any, lags: Any) -> np.ndarray:
    """``g(Delta) = mean_k <p_k, p_{k+Delta}>`` over the ``L - Delta`` pairs of rows of a position table.

    Args:
        P: (L, d) table (numpy or torch; computed in float64, uncentred).
        lags: non-negative integer offsets, each ``< L``.

    Returns:
        float64 array of the shape of ``lags``.
    """
    P = _matrix(P, "P")
    lags_arr = np.asarray(lags)
    if not np.issubdtype(lags_arr.dtype, np.integer):
        raise ValueError(f"lags must be integers, got dtype {lags_arr.dtype}")
    if np.any(lags_arr < 0) or np.any(lags_arr >= P.shape[0]):
        raise ValueError(f"lags must lie in [0, {P.shape[0]}), got {lags_arr.min()}..{lags_arr.max()}")
    flat = [float(np.einsum("kd,kd->", P[: P.shape[0] - lag], P[lag:]) / (P.shape[0] - lag))
            for lag in lags_arr.reshape(-1)]
    return np.asarray(flat).reshape(lags_arr.shape)


@functools.lru_cache(maxsize=1)
def minilm_embedding_tables() -> tuple[np.ndarray, np.ndarray]:
    """The trained word-embedding (30522, 384) and position-embedding (512, 384) tables of the bundled MiniLM.

    Loaded once per process with ``transformers.AutoModel`` from :func:`utils.encoder.minilm_path` with
    ``HF_HUB_OFFLINE=1`` (nothing is downloaded). Returns float64 numpy copies ``(word, position)``; shapes follow
    the model's ``config.json`` (vocab_size x hidden_size, max_position_embeddings x hidden_size).
    """
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    from .encoder import minilm_path

    hf_logging.disable_progress_bar()
    model = AutoModel.from_pretrained(str(minilm_path()))
    emb = model.embeddings
    word = emb.word_embeddings.weight.detach().to(torch.float64).numpy().copy()
    position = emb.position_embeddings.weight.detach().to(torch.float64).numpy().copy()
    return word, position


def sinusoidal_ode_matrix(d: int, base: float = 10000.0) -> np.ndarray:
    """Generator ``W`` of the linear ODE ``dp_t/dt = W p_t`` solved by the sinusoidal encoding in the
    (sin, cos)-interleaved layout ``p_{t,2i} = sin(t w_i)``, ``p_{t,2i+1} = cos(t w_i)``, ``w_i = base^{-2i/d}``.

    Block ``i`` is ``w_i [[0, 1], [-1, 0]]``, so ``p_t = expm(t W) p_0`` with ``p_0 = (0, 1, 0, 1, ...)``.

    Returns:
        float64 numpy array (d, d), block diagonal.
    """
    d = positive_int(d, "d", minimum=2)
    if d % 2:
        raise ValueError(f"d must be even, got {d}")
    b = _base(base)
    W = np.zeros((d, d))
    freqs = b ** (-np.arange(0, d, 2) / d)
    idx = np.arange(0, d, 2)
    W[idx, idx + 1] = freqs
    W[idx + 1, idx] = -freqs
    return W


def complex_order_embedding(amplitude: Any, frequency: Any, phase: Any, positions: Any) -> np.ndarray:
    """Complex Order embedding of one word: ``r_l exp(i (omega_l k + theta_l))`` for each position ``k``.

    Args:
        amplitude, frequency, phase: real vectors of shape (d,) (the word's ``r``, ``omega``, ``theta``).
        positions: real positions, shape (n,) (or a scalar).

    Returns:
        complex128 numpy array (n, d) (or (d,) for a scalar position).
    """
    vecs = []
    for name, v in (("amplitude", amplitude), ("frequency", frequency), ("phase", phase)):
        arr = np.asarray(v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else v)
        if arr.ndim != 1 or np.iscomplexobj(arr):
            raise ValueError(f"{name} must be a real 1-D vector, got shape {arr.shape} dtype {arr.dtype}")
        vecs.append(arr.astype(np.float64))
    r, omega, theta = vecs
    if not r.shape == omega.shape == theta.shape:
        raise ValueError(f"amplitude, frequency and phase must have the same shape, got {r.shape}, {omega.shape}, "
                         f"{theta.shape}")
    k = _deltas(positions)
    if k.ndim > 1:
        raise ValueError(f"positions must be a scalar or 1-D, got shape {k.shape}")
    return r * np.exp(1j * (np.multiply.outer(k, omega) + theta))


def conv_stack_output(num_layers: int, padding_mode: str, *, channels: int = 8, length: int = 32,
                      kernel_size: int = 3, seed: int = 0) -> np.ndarray:
    """Output of ``num_layers`` layers ``x <- tanh(Conv1d(x))`` (float64, default PyTorch init, bias on) on the
    constant input ``ones(1, channels, length)``.

    The layers are built after ``torch.manual_seed(seed)`` (the global torch generator is reseeded). With
    ``padding_mode="circular"`` the stack commutes with cyclic shifts, so every column of the output is the same;
    with ``"zeros"`` the columns within ``num_layers`` of a border differ (zero padding leaks absolute position).

    Returns:
        float64 numpy array (channels, length).
    """
    num_layers = positive_int(num_layers, "num_layers")
    channels = positive_int(channels, "channels")
    length = positive_int(length, "length")
    kernel_size = positive_int(kernel_size, "kernel_size")
    if kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be odd (same-length padding), got {kernel_size}")
    if padding_mode not in ("zeros", "circular", "reflect", "replicate"):
        raise ValueError(f"padding_mode must be 'zeros', 'circular', 'reflect' or 'replicate', got {padding_mode!r}")
    torch.manual_seed(int(seed))
    layers = [torch.nn.Conv1d(channels, channels, kernel_size, padding=kernel_size // 2,
                              padding_mode=padding_mode).double() for _ in range(num_layers)]
    x = torch.ones(1, channels, length, dtype=torch.float64)
    with torch.no_grad():
        for layer in layers:
            x = torch.tanh(layer(x))
    return x[0].numpy()


def count_distinct_columns(out: Any, decimals: int = 8) -> int:
    """Number of distinct columns of a (channels, length) array after rounding to ``decimals`` places."""
    out = _matrix(out, "out") if np.asarray(out).ndim == 2 and min(np.asarray(out).shape) >= 2 else None
    if out is None:
        raise ValueError("out must be a (channels, length) matrix with at least 2 channels and 2 positions")
    return int(len(np.unique(np.round(out.T, decimals), axis=0)))


def counting_rnn(length: int) -> torch.Tensor:
    """Run the one-unit ReLU RNN ``h_t = relu(x_t + h_{t-1})`` (``torch.nn.RNN``, weights 1, biases 0, ``h_0 = 0``)
    on ``length`` inputs equal to 1; it counts: the output is ``[1, 2, ..., length]``.

    Returns:
        float32 tensor of shape (length,).
    """
    length = positive_int(length, "length")
    rnn = torch.nn.RNN(1, 1, nonlinearity="relu", batch_first=True)
    with torch.no_grad():
        rnn.weight_ih_l0.fill_(1.0)
        rnn.weight_hh_l0.fill_(1.0)
        rnn.bias_ih_l0.zero_()
        rnn.bias_hh_l0.zero_()
        out, _ = rnn(torch.ones(1, length, 1))
    return out[0, :, 0]
