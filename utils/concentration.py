"""Concentration of Gaussian vectors: exact chi-square tails, Chernoff bounds and Monte Carlo samplers.

Throughout, ``u`` and ``v`` are independent vectors in R^n with i.i.d. N(0, 1/n) entries (variance 1/n, i.e.
``u = z / sqrt(n)`` with ``z`` standard normal), so that ``n ||u||^2 ~ chi^2_n`` and ``E ||u||^2 = 1``.

* :func:`chi2_norm_tail` -- the exact two-sided tail P(| ||u||^2 - 1 | >= eps) from ``scipy.stats.chi2``, the two
  optimised Chernoff bounds and the article's simplified bound 2 exp(-n eps^2 / 8) (numpy, vectorised).
* :func:`chernoff_objective`, :func:`chernoff_optimum` -- the Chernoff function of lambda and its closed-form optimum.
* :func:`inner_product_tail_exact` -- P(<u, v> >= eps) by a chi-square-difference integral (scipy quad over a finite
  range); :func:`inner_product_tail_gil_pelaez` -- the same number from the characteristic function (a cross-check).
* :func:`norm_sq_samples`, :func:`inner_product_samples` -- Monte Carlo draws of ||u||^2 and <u, v> (torch, chunked,
  on the generator's device, so CUDA when the generator lives there).

All logarithms are natural; ``log(1 +- eps)`` is always computed with ``log1p``.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from scipy import integrate, stats

from ._validation import positive_int

__all__ = ["chi2_norm_tail", "chernoff_objective", "chernoff_optimum", "inner_product_tail_exact",
           "inner_product_tail_gil_pelaez", "norm_sq_samples", "inner_product_samples", "binomial_se"]

_TAILS = ("upper", "lower")


def _dims(n: Any) -> np.ndarray:
    """``n`` as an int64 array of dimensions >= 1 (python/numpy integers; no floats, no bools)."""
    arr = np.asarray(n)
    if arr.dtype == bool or arr.dtype.kind not in "iu":
        raise ValueError(f"n must be an integer (or integer array) >= 1, got {n!r}")
    if arr.size == 0 or np.any(arr < 1):
        raise ValueError(f"n must be an integer (or integer array) >= 1, got {n!r}")
    return arr.astype(np.int64)


def _eps(eps: Any) -> np.ndarray:
    """``eps`` as a float64 array with every entry in the open interval (0, 1)."""
    try:
        arr = np.asarray(eps, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"eps must be a number (or array) in (0, 1), got {eps!r}") from None
    if arr.size == 0 or not np.all((arr > 0.0) & (arr < 1.0)):
        raise ValueError(f"eps must lie in the open interval (0, 1), got {eps!r}")
    return arr


def _out(x: np.ndarray) -> Any:
    return float(x) if np.ndim(x) == 0 else x


def chi2_norm_tail(n: Any, eps: Any) -> dict[str, Any]:
    """Exact and bounded tails of ||u||^2 for u with i.i.d. N(0, 1/n) entries (so n ||u||^2 ~ chi^2_n).

    Args:
        n: dimension(s), integer >= 1 (scalar or integer array).
        eps: deviation(s) in (0, 1) (scalar or array); broadcast against ``n``.

    Returns:
        dict of floats (scalar input) or float64 arrays (broadcast shape):

        * ``upper_exact`` = P(||u||^2 - 1 >= eps) = chi2.sf(n (1 + eps), n),
        * ``lower_exact`` = P(1 - ||u||^2 >= eps) = chi2.cdf(n (1 - eps), n),
        * ``exact`` = their sum (the two-sided tail),
        * ``chernoff_upper`` = exp(n/2 (log(1 + eps) - eps)), ``chernoff_lower`` = exp(n/2 (log(1 - eps) + eps)),
        * ``chernoff`` = their sum, ``bound`` = 2 exp(-n eps^2 / 8) (the article's unit-norm lemma).

    Raises:
        ValueError: n not a positive integer, eps outside (0, 1).
    """
    dims = _dims(n)
    e = _eps(eps)
    dims, e = np.broadcast_arrays(dims, e)
    upper = stats.chi2.sf(dims * (1.0 + e), dims)
    lower = stats.chi2.cdf(dims * (1.0 - e), dims)
    c_up = np.exp(0.5 * dims * (np.log1p(e) - e))
    c_lo = np.exp(0.5 * dims * (np.log1p(-e) + e))
    bound = 2.0 * np.exp(-dims * e**2 / 8.0)
    return {"upper_exact": _out(upper), "lower_exact": _out(lower), "exact": _out(upper + lower),
            "chernoff_upper": _out(c_up), "chernoff_lower": _out(c_lo), "chernoff": _out(c_up + c_lo),
            "bound": _out(bound)}


def chernoff_objective(lam: Any, n: int, eps: float, *, tail: str = "upper") -> Any:
    """Logarithm of the Chernoff function whose minimum over lambda > 0 bounds a tail of ||u||^2.

    * ``tail="upper"``: log[e^{-lam (1 + eps)} E e^{lam ||u||^2}] = -lam (1 + eps) - n/2 log(1 - 2 lam / n),
      finite for 0 < lam < n/2 and +inf for lam >= n/2 (the moment generating function diverges there);
    * ``tail="lower"``: log[e^{lam (1 - eps)} E e^{-lam ||u||^2}] = lam (1 - eps) - n/2 log(1 + 2 lam / n).

    ``lam`` may be a scalar or an array (vectorised, float64); returns a float or an array.
    """
    if tail not in _TAILS:
        raise ValueError(f"tail must be one of {_TAILS}, got {tail!r}")
    n = positive_int(n, "n")
    e = float(_eps(eps))
    lam = np.asarray(lam, dtype=np.float64)
    if np.any(~(lam > 0)):
        raise ValueError("lam must be positive")
    if tail == "upper":
        with np.errstate(invalid="ignore", divide="ignore"):
            val = -lam * (1.0 + e) - 0.5 * n * np.log1p(-2.0 * lam / n)
        val = np.where(lam < 0.5 * n, val, np.inf)
    else:
        val = lam * (1.0 - e) - 0.5 * n * np.log1p(2.0 * lam / n)
    return _out(val)


def chernoff_optimum(n: Any, eps: Any, *, tail: str = "upper") -> tuple[Any, Any]:
    """Closed-form minimiser and minimum of the Chernoff function (see :func:`chernoff_objective`).

    Upper tail: lam* = n eps / (2 (1 + eps)), value exp(n/2 (log(1 + eps) - eps)).
    Lower tail: lam* = n eps / (2 (1 - eps)), value exp(n/2 (log(1 - eps) + eps)).
    Vectorised over ``n`` and ``eps``; returns ``(lam_star, value)`` as floats or arrays.
    """
    if tail not in _TAILS:
        raise ValueError(f"tail must be one of {_TAILS}, got {tail!r}")
    dims = _dims(n)
    e = _eps(eps)
    if tail == "upper":
        lam = dims * e / (2.0 * (1.0 + e))
        val = np.exp(0.5 * dims * (np.log1p(e) - e))
    else:
        lam = dims * e / (2.0 * (1.0 - e))
        val = np.exp(0.5 * dims * (np.log1p(-e) + e))
    return _out(lam), _out(val)


def _ip_tail_one(n: int, eps: float, tail_mass: float) -> float:
    # n <u, v> = (X - Y) / 2 with X = n ||(u + v)/sqrt2||^2, Y = n ||(u - v)/sqrt2||^2 i.i.d. chi^2_n, hence
    # P(<u, v> >= eps) = P(X >= Y + 2 n eps) = int f_Y(y) sf_X(y + 2 n eps) dy. The integral runs over the finite
    # range [ppf(tail_mass), isf(tail_mass)] of Y: over (0, inf) quad can miss the narrow bulk for large n.
    lo, hi = stats.chi2.ppf(tail_mass, n), stats.chi2.isf(tail_mass, n)
    shift = 2.0 * n * eps

    def integrand(y: float) -> float:
        return stats.chi2.pdf(y, n) * stats.chi2.sf(y + shift, n)

    points = [float(n - 2)] if lo < n - 2 < hi else None  # the mode of chi^2_n
    val, _ = integrate.quad(integrand, lo, hi, limit=500, epsabs=0.0, epsrel=1e-10, points=points)
    return float(val)


def inner_product_tail_exact(n: Any, eps: Any, *, tail_mass: float = 1e-17) -> Any:
    """One-sided tail P(<u, v> >= eps) for independent u, v with i.i.d. N(0, 1/n) entries.

    Computed as the chi-square-difference integral P = int f_{chi2_n}(y) chi2.sf(y + 2 n eps, n) dy over the finite
    range [chi2.ppf(tail_mass, n), chi2.isf(tail_mass, n)] (scipy quad, limit=500, epsabs=0, epsrel=1e-10). The
    truncation changes P by at most ``tail_mass`` in absolute terms. The law is symmetric, so the two-sided tail
    P(|<u, v>| >= eps) is twice this value.

    Args:
        n: integer >= 1 (scalar or array). eps: in (0, 1) (scalar or array), broadcast against n.
        tail_mass: probability mass of Y left out on each side, in (0, 1e-6].

    Returns:
        float (scalar input) or float64 array.
    """
    dims = _dims(n)
    e = _eps(eps)
    if not 0.0 < float(tail_mass) <= 1e-6:
        raise ValueError(f"tail_mass must lie in (0, 1e-6], got {tail_mass!r}")
    dims, e = np.broadcast_arrays(dims, e)
    out = np.array([_ip_tail_one(int(k), float(x), float(tail_mass)) for k, x in zip(dims.ravel(), e.ravel())])
    return _out(out.reshape(dims.shape))


def inner_product_tail_gil_pelaez(n: int, eps: float) -> float:
    """P(<u, v> >= eps) from the characteristic function (1 + t^2)^(-n/2) of n <u, v> (Gil-Pelaez inversion).

    P = 1/2 - (1/pi) int_0^inf sin(t n eps) / t (1 + t^2)^(-n/2) dt. The integral runs over [0, min(1, T)] with the
    smooth form x sinc(x t / pi), where T is where the envelope (1 + T^2)^(-n/2) falls below e^-60, and, when T > 1
    (n < 174), over [1, inf) with quad's Fourier weight (QAWF). The subtraction loses absolute precision ~1e-16: a
    cross-check of :func:`inner_product_tail_exact`, not a replacement for tiny tails.
    """
    n = positive_int(n, "n")
    e = float(_eps(eps))
    x = n * e
    t_max = math.sqrt(math.expm1(120.0 / n))

    def near(t: float) -> float:
        return x * np.sinc(x * t / np.pi) * math.exp(-0.5 * n * math.log1p(t * t))  # sin(x t)/t = x sinc(x t/pi)

    val, _ = integrate.quad(near, 0.0, min(1.0, t_max), limit=2000, epsabs=1e-17, epsrel=1e-12)
    if t_max > 1.0:
        far, _ = integrate.quad(lambda t: math.exp(-0.5 * n * math.log1p(t * t)) / t, 1.0, np.inf, weight="sin",
                                wvar=x, limlst=200)
        val += far
    return 0.5 - val / math.pi


def _sample_chunks(n: int, num_samples: int, n_vectors: int, generator: torch.Generator | None,
                   dtype: torch.dtype, chunk_size: int, device: torch.device | str | None):
    n = positive_int(n, "n")
    num_samples = positive_int(num_samples, "num_samples")
    chunk_size = positive_int(chunk_size, "chunk_size")
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
    dev = torch.device(device) if device is not None else (generator.device if generator is not None
                                                            else torch.device("cpu"))
    if generator is not None and generator.device.type != dev.type:
        raise ValueError(f"generator lives on {generator.device}, samples were asked on {dev}")
    for start in range(0, num_samples, chunk_size):
        size = min(chunk_size, num_samples - start)
        # (vectors, size, n): i.i.d. N(0, 1/n) entries
        yield torch.randn(n_vectors, size, n, generator=generator, device=dev, dtype=dtype) / math.sqrt(n)


def norm_sq_samples(n: int, num_samples: int, *, generator: torch.Generator | None = None,
                    dtype: torch.dtype = torch.float64, chunk_size: int = 100_000,
                    device: torch.device | str | None = None) -> torch.Tensor:
    """Monte Carlo draws of ||u||^2 for u with i.i.d. N(0, 1/n) entries.

    Vectors are drawn ``chunk_size`` at a time (memory chunk_size x n). Returns a tensor of shape (num_samples,)
    with ``dtype`` on ``device`` (default: the generator's device, else CPU).
    """
    parts = [(u[0] * u[0]).sum(dim=1) for u in _sample_chunks(n, num_samples, 1, generator, dtype, chunk_size,
                                                                device)]
    return torch.cat(parts)


def inner_product_samples(n: int, num_samples: int, *, generator: torch.Generator | None = None,
                          dtype: torch.dtype = torch.float64, chunk_size: int = 100_000,
                          device: torch.device | str | None = None) -> torch.Tensor:
    """Monte Carlo draws of <u, v> for independent u, v with i.i.d. N(0, 1/n) entries, shape (num_samples,).

    Same chunking, dtype and device rules as :func:`norm_sq_samples`.
    """
    parts = [(uv[0] * uv[1]).sum(dim=1) for uv in _sample_chunks(n, num_samples, 2, generator, dtype, chunk_size,
                                                                  device)]
    return torch.cat(parts)


def binomial_se(p: Any, num_samples: int) -> Any:
    """Standard error sqrt(p (1 - p) / M) of an empirical frequency over M independent trials (vectorised in p)."""
    num_samples = positive_int(num_samples, "num_samples")
    arr = np.asarray(p, dtype=np.float64)
    if np.any((arr < 0) | (arr > 1)) or np.any(np.isnan(arr)):
        raise ValueError(f"p must lie in [0, 1], got {p!r}")
    return _out(np.sqrt(arr * (1.0 - arr) / num_samples))
