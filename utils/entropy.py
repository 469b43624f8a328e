"""Entropy of Skip-Gram / attention softmaxes on the sphere, and the minimum-entropy dimension rule n > 8.33 log N.

Background (kexue.fm archives 7695, 8711): with N items whose vectors have norm sqrt(n) and uniform directions, the
Skip-Gram joint distribution p(i, j) = exp(<u_i, v_j>) / Z has entropy H ~= 2 log N + h_n, where

    h_n = log E[exp(s cos t)] - s E[exp(s cos t) cos t] / E[exp(s cos t)],   s = n,

and t is the angle between two independent uniform directions in R^n (density proportional to sin^(n-2) t on (0, pi)).
The rule "H < 0" gives the threshold dimension; h_n / n -> (1/2) log((sqrt(5) - 1) / 2) ~= -0.2406, so n > 8.31 log N.

Kernels:

* :func:`sphere_angle_logpdf` -- the normalised log density of that angle (torch, shape-preserving);
* :func:`log_mean_exp_cos` -- log E[exp(scale cos t)] by log-space quadrature (float64), vectorised over n;
* :func:`skipgram_entropy_offset` -- h_n (with s = lam * n), vectorised over n;
* :func:`dimension_threshold` -- the smallest n with 2 log N + h_n < 0 ("joint") or log N + h_n < 0 ("row");
* :func:`attention_row_entropy` -- exact entropies of softmax(scale * q K^T) rows, streamed over key blocks
  (N = 10^6 keys fit; runs on CUDA when the input lives there).

All quadratures use the midpoint rule on ``grid`` uniform interior points of (0, pi) (the endpoints, where
sin t = 0, are excluded), with the weights (n - 2) log sin t normalised by logsumexp, so nothing underflows even for
n ~ 10^3. The integrand vanishes to order n - 2 at both endpoints, so (Euler-Maclaurin) the midpoint error is
O(grid^-(n-1)) for odd n and spectrally small for even n: 2 * 10^4 points agree with 2 * 10^5 points to ~1e-11 for
4 <= n <= 1024; only n = 3 converges slowly (error ~1e-9 at 2 * 10^4 points, ~1e-11 at 2 * 10^5).
"""
from __future__ import annotations

import functools
import math
from typing import Any, Sequence

import numpy as np
import torch

from ._validation import as_float_tensor, finite_float, positive_int

__all__ = ["sphere_angle_logpdf", "log_mean_exp_cos", "skipgram_entropy_offset", "dimension_threshold",
           "attention_row_entropy", "LAPLACE_LIMIT"]

#: lim h_n / n = (1/2) log((sqrt 5 - 1) / 2) = -(1/2) log(golden ratio) ~= -0.240606.
LAPLACE_LIMIT: float = 0.5 * math.log((math.sqrt(5.0) - 1.0) / 2.0)

_CRITERIA = ("joint", "row")
_BLOCK_ELEMENTS = 2_000_000  # rows x grid points per quadrature block (16 MB in float64)


def _dimension(n: Any, name: str = "n") -> int:
    return positive_int(n, name, minimum=2)


def _dimensions(n: Any) -> tuple[np.ndarray, bool]:
    """``n`` as a 1-D int64 array of dimensions >= 2, and whether it was a scalar."""
    if isinstance(n, torch.Tensor):
        n = n.detach().cpu().numpy()
    if isinstance(n, np.ndarray) and n.ndim == 0:
        n = n.item()
    if isinstance(n, (Sequence, np.ndarray)) and not isinstance(n, str):
        values = list(np.asarray(n).reshape(-1)) if isinstance(n, np.ndarray) else list(n)
        if len(values) == 0:
            raise ValueError("n is an empty sequence")
        return np.array([_dimension(v) for v in values], dtype=np.int64), False
    return np.array([_dimension(n)], dtype=np.int64), True


def _scales(scale: Any, count: int, name: str = "scale") -> np.ndarray:
    arr = np.asarray(scale.detach().cpu().numpy() if isinstance(scale, torch.Tensor) else scale)
    if arr.dtype.kind not in "iuf" or arr.dtype == bool:
        raise ValueError(f"{name} must be a real number or a sequence of them, got {scale!r}")
    arr = arr.astype(np.float64).reshape(-1)
    if arr.size == 1:
        arr = np.full(count, arr[0])
    if arr.size != count:
        raise ValueError(f"{name} must be a scalar or have one entry per n ({count}), got {arr.size} entries")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite, got {scale!r}")
    return arr


def sphere_angle_logpdf(theta: Any, n: int) -> torch.Tensor:
    """Log density of the angle between two independent uniform directions in R^n.

    log p(theta) = (n - 2) log sin(theta) - log B(1/2, (n - 1)/2) on [0, pi] (normalised: the density integrates
    to 1), and -inf outside. For n = 2 the angle is uniform (density 1/pi).

    Args:
        theta: angles in radians, any shape (tensor or numpy array; integers become float64).
        n: ambient dimension, an integer >= 2.

    Returns:
        Tensor with the shape, floating dtype and device of ``theta``.
    """
    theta = as_float_tensor(theta, "theta")
    n = _dimension(n)
    log_beta = math.lgamma(0.5) + math.lgamma((n - 1) / 2) - math.lgamma(n / 2)
    inside = (theta >= 0) & (theta <= math.pi)
    if n == 2:
        body = torch.zeros_like(theta)
    else:
        body = (n - 2) * torch.log(torch.sin(theta.clamp(0.0, math.pi)).clamp_min(0.0))
    return torch.where(inside, body - log_beta, torch.full_like(theta, -math.inf))


def _angle_grid(grid: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Midpoints theta_k = (k + 1/2) pi / grid, with log sin and cos (float64, CPU)."""
    theta = (torch.arange(grid, dtype=torch.float64) + 0.5) * (math.pi / grid)
    return theta, torch.log(torch.sin(theta)), torch.cos(theta)


def _quadrature(dims: np.ndarray, scales: np.ndarray, grid: int) -> tuple[np.ndarray, np.ndarray]:
    """For each (n, s): log E[exp(s cos t)] and E_s[cos t] (mean of cos t under the tilted law), float64."""
    _, log_sin, cos = _angle_grid(grid)
    log_mean = np.empty(len(dims))
    tilted_cos = np.empty(len(dims))
    rows = max(1, _BLOCK_ELEMENTS // grid)
    for start in range(0, len(dims), rows):
        n_block = torch.as_tensor(dims[start:start + rows], dtype=torch.float64).unsqueeze(1)  # (b, 1)
        s_block = torch.as_tensor(scales[start:start + rows], dtype=torch.float64).unsqueeze(1)  # (b, 1)
        log_w = (n_block - 2.0) * log_sin  # (b, grid): unnormalised log weights of the angle law
        log_a = log_w + s_block * cos  # (b, grid): tilted by exp(s cos t)
        lse_a = torch.logsumexp(log_a, dim=1)
        log_mean[start:start + rows] = (lse_a - torch.logsumexp(log_w, dim=1)).numpy()
        tilted = torch.exp(log_a - lse_a.unsqueeze(1))  # (b, grid), rows sum to 1
        tilted_cos[start:start + rows] = (tilted * cos).sum(dim=1).numpy()
    return log_mean, tilted_cos


def log_mean_exp_cos(n: Any, scale: Any = None, *, grid: int = 200_000) -> float | np.ndarray:
    """log E[exp(scale * cos t)], t the angle between two uniform directions in R^n (density ~ sin^(n-2) t).

    Computed in log space (logsumexp over ``grid`` uniform interior midpoints of (0, pi), float64), so it neither
    overflows for large ``scale`` nor underflows for large n. E[exp(d (cos t - 1))] = exp(log_mean_exp_cos(d, d) - d).

    Args:
        n: an integer >= 2, or a sequence of them.
        scale: the factor s (default: n itself); a number or a sequence with one entry per n.
        grid: number of quadrature points (>= 16).

    Returns:
        float for a scalar n, else a float64 array with one entry per n.
    """
    dims, scalar = _dimensions(n)
    grid = positive_int(grid, "grid", minimum=16)
    scales = dims.astype(np.float64) if scale is None else _scales(scale, len(dims))
    log_mean, _ = _quadrature(dims, scales, grid)
    return float(log_mean[0]) if scalar else log_mean


def skipgram_entropy_offset(n: Any, lam: float = 1.0, grid: int = 200_000) -> float | np.ndarray:
    """The entropy offset h_n of the mean-field Skip-Gram model (H ~= 2 log N + h_n for the joint distribution).

    h_n = log E[e^{s cos t}] - s E[e^{s cos t} cos t] / E[e^{s cos t}] with s = lam * n, t ~ sphere angle in R^n
    (vectors of norm sqrt(lam * n), so that <u, v> = s cos t). It is the (negative) entropy of the tilted angle
    law relative to the uniform one, so h_n <= 0; h_n / n -> (1/2) log((sqrt 5 - 1)/2) for lam = 1.

    Args:
        n: an integer >= 2, or a sequence of them.
        lam: positive scale factor of the logits (s = lam * n).
        grid: number of quadrature points (>= 16), float64 log-space midpoint rule.

    Returns:
        float for a scalar n, else a float64 array with one entry per n.
    """
    dims, scalar = _dimensions(n)
    grid = positive_int(grid, "grid", minimum=16)
    try:
        lam = float(lam)
    except (TypeError, ValueError):
        raise ValueError(f"lam must be a positive number, got {lam!r}") from None
    if not (math.isfinite(lam) and lam > 0):
        raise ValueError(f"lam must be a positive finite number, got {lam!r}")
    scales = lam * dims.astype(np.float64)
    log_mean, tilted_cos = _quadrature(dims, scales, grid)
    offset = log_mean - scales * tilted_cos
    return float(offset[0]) if scalar else offset


_THRESHOLD_BLOCK = 64  # dimensions per cached block of h_n values


@functools.lru_cache(maxsize=256)
def _offset_block(first: int, last: int, grid: int) -> np.ndarray:
    """h_n for n = first..last (inclusive), cached: repeated thresholds (widgets, tables) cost nothing."""
    block = skipgram_entropy_offset(np.arange(first, last + 1), grid=grid)
    block.setflags(write=False)
    return block


def dimension_threshold(N: float, *, n_max: int = 1000, grid: int = 20_000, criterion: str = "joint") -> int:
    """Smallest dimension n >= 2 at which the mean-field entropy turns negative.

    ``criterion="joint"``: 2 log N + h_n < 0 (the Skip-Gram joint distribution over N^2 pairs; this gives the
    article's n > 8.33 log N). ``criterion="row"``: log N + h_n < 0 (one softmax row over N keys, ~4.16 log N).

    Args:
        N: number of items (a real number >= 2; natural logarithm).
        n_max: largest dimension scanned (h_n is computed upwards in cached blocks of 64 dimensions).
        grid: quadrature points for h_n (2 * 10^4 agrees with 2 * 10^5 to ~1e-11).
        criterion: ``"joint"`` or ``"row"``.

    Raises:
        ValueError: N < 2 or not finite, unknown criterion, or no n <= n_max satisfies the criterion.
    """
    try:
        N = float(N)
    except (TypeError, ValueError):
        raise ValueError(f"N must be a number >= 2, got {N!r}") from None
    if not (math.isfinite(N) and N >= 2):
        raise ValueError(f"N must be a finite number >= 2, got {N!r}")
    if criterion not in _CRITERIA:
        raise ValueError(f"criterion must be one of {_CRITERIA}, got {criterion!r}")
    n_max = positive_int(n_max, "n_max", minimum=2)
    grid = positive_int(grid, "grid", minimum=16)
    factor = 2.0 if criterion == "joint" else 1.0
    log_n_items = math.log(N)
    for first in range(2, n_max + 1, _THRESHOLD_BLOCK):  # scan upwards block by block, stop at the first hit
        last = min(first + _THRESHOLD_BLOCK - 1, n_max)
        entropy = factor * log_n_items + _offset_block(first, last, grid)  # index i <-> n = first + i
        hits = np.flatnonzero(entropy < 0)
        if hits.size:
            return first + int(hits[0])
    raise ValueError(f"no n <= n_max = {n_max} satisfies the {criterion} criterion for N = {N:g}; raise n_max")


def attention_row_entropy(q: Any, K: Any, scale: float = 1.0, *, chunk_size: int = 65536) -> torch.Tensor:
    """Exact entropies (nats) of the softmax rows softmax_j(scale * <q_i, k_j>).

    Streams over blocks of ``chunk_size`` keys with a running max m, S = sum_j e^{l_j - m} and
    T = sum_j e^{l_j - m} (l_j - m); then H = log S - T / S (both terms >= 0, no cancellation). Memory is
    Q x chunk_size, so N = 10^6 keys fit.

    Args:
        q: queries, shape (Q, d) or (d,). K: keys, shape (N, d). Numpy arrays are accepted.
        scale: factor applied to the inner products (1 / sqrt(d) for scaled dot-product attention).
        chunk_size: keys per block.

    Returns:
        Tensor of shape (Q,) (or () for a 1-D q) on q's device, in the promoted floating dtype of q and K
        (use float64 for exact checks). K is moved to q's device; computed on CUDA when q lives there.
    """
    q = as_float_tensor(q, "q")
    K = as_float_tensor(K, "K", ndim=2)
    if q.ndim not in (1, 2):
        raise ValueError(f"q must have shape (Q, d) or (d,), got {tuple(q.shape)}")
    single = q.ndim == 1
    q2 = q.unsqueeze(0) if single else q
    if q2.shape[1] != K.shape[1]:
        raise ValueError(f"q and K must have the same dimension d, got {q2.shape[1]} and {K.shape[1]}")
    if K.shape[0] < 1:
        raise ValueError("K must hold at least one key")
    scale = finite_float(scale, "scale")
    chunk_size = positive_int(chunk_size, "chunk_size")
    dtype = torch.promote_types(q2.dtype, K.dtype)
    q2 = q2.to(dtype)
    num_q = q2.shape[0]
    run_max = torch.full((num_q,), -math.inf, dtype=dtype, device=q2.device)
    run_sum = torch.zeros(num_q, dtype=dtype, device=q2.device)
    run_tilt = torch.zeros(num_q, dtype=dtype, device=q2.device)
    for start in range(0, K.shape[0], chunk_size):
        block = K[start:start + chunk_size].to(device=q2.device, dtype=dtype)
        logits = scale * (q2 @ block.T)  # (Q, block)
        new_max = torch.maximum(run_max, logits.max(dim=1).values)
        shift = run_max - new_max  # <= 0 (-inf on the first block, where run_sum = run_tilt = 0)
        decay = torch.exp(shift)
        # re-centre the running sums on the new max: sum e^{l-m'} (l-m') = e^{m-m'} (T + (m-m') S)
        run_tilt = decay * (run_tilt + torch.nan_to_num(shift, neginf=0.0) * run_sum)
        run_sum = decay * run_sum
        centred = logits - new_max.unsqueeze(1)
        weights = torch.exp(centred)
        run_sum = run_sum + weights.sum(dim=1)
        run_tilt = run_tilt + (weights * centred).sum(dim=1)
        run_max = new_max
    entropy = torch.log(run_sum) - run_tilt / run_sum
    return entropy[0] if single else entropy
