"""Johnson-Lindenstrauss trials: success rates of random Gaussian projections, dimension bounds, near-orthogonality.

A *trial* draws one JL matrix A (n_out x m) with i.i.d. N(0, 1/n_out) entries and maps the cloud V (N, m) to
W = V A^T (N, n_out). Trials are drawn in law with :func:`utils.geometry.projected_gram_sample` (the Cholesky trick,
cheap when m >> N) and evaluated through Gram matrices, ``trial_batch`` trials at a time, so that memory stays bounded
by roughly ``trial_batch * N * max(N, n_out)`` elements whatever the number of trials.

Two success criteria (``kind``):

* ``"distance"``: every unordered pair i < j has ratio ||w_i - w_j||^2 / ||v_i - v_j||^2 in [1 - eps, 1 + eps]; the
  per-trial statistic is max_{i<j} |ratio - 1|;
* ``"inner_product"``: every pair i < j has |<w_i, w_j> - <v_i, v_j>| <= eps (meant for unit vectors); the per-trial
  statistic is max_{i<j} |<w_i, w_j> - <v_i, v_j>|.

A trial succeeds when its statistic is <= eps.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch

from ._validation import as_float_tensor, open_unit_interval, positive_int
from .geometry import pairwise_sq_dists, projected_gram_sample

__all__ = ["jl_max_distortion", "jl_max_distortion_nested", "jl_success_rate", "jl_success_curve",
           "first_n_reaching", "jl_dimension_bounds", "jl_union_bound", "fixed_vector_projections",
           "near_orthogonality"]

_KINDS = ("distance", "inner_product")
_BATCH_BUDGET = 2**23  # elements of one (trial_batch, N, max(N, n_out)) block


def _reference(V: torch.Tensor, kind: str) -> torch.Tensor:
    """The (N, N) float64 matrix the projected Gram quantities are compared with (diagonal made harmless)."""
    if kind not in _KINDS:
        raise ValueError(f"kind must be one of {_KINDS}, got {kind!r}")
    V64 = V.to(torch.float64)
    if kind == "inner_product":
        return V64 @ V64.T
    ref = pairwise_sq_dists(V64)
    off = ~torch.eye(V.shape[0], dtype=torch.bool, device=V.device)
    if bool((ref[off] <= 0).any()):
        raise ValueError("V contains repeated points (zero distance): the distortion ratio is undefined")
    ref.fill_diagonal_(1.0)  # the diagonal is excluded from the maximum anyway
    return ref


def _max_deviation(gram: torch.Tensor, ref: torch.Tensor, kind: str) -> torch.Tensor:
    """Per-trial max over i != j of the deviation (see the module docstring); gram (B, N, N) -> (B,) float64."""
    if kind == "inner_product":
        dev = (gram - ref).abs_()
    else:
        sq = torch.diagonal(gram, dim1=-2, dim2=-1)  # (B, N) squared norms
        dist = (sq.unsqueeze(-1) + sq.unsqueeze(-2)).sub_(gram, alpha=2.0)  # (B, N, N) squared distances
        dev = dist.div_(ref).sub_(1.0).abs_()
    torch.diagonal(dev, dim1=-2, dim2=-1).zero_()
    return dev.amax(dim=(-2, -1)).to(torch.float64)


def _batch_size(trial_batch: int | None, num_points: int, width: int, n_trials: int) -> int:
    if trial_batch is None:
        return max(1, min(n_trials, _BATCH_BUDGET // (num_points * max(num_points, width))))
    return positive_int(trial_batch, "trial_batch")


def _prepare(V: Any, n_trials: int, kind: str, generator: torch.Generator | None,
             dtype: torch.dtype) -> tuple[torch.Tensor, int, torch.Tensor]:
    V = as_float_tensor(V, "V", ndim=2)
    if V.shape[0] < 2:
        raise ValueError(f"V must hold at least 2 points, got shape {tuple(V.shape)}")
    n_trials = positive_int(n_trials, "n_trials")
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
    if generator is not None and generator.device.type != V.device.type:
        raise ValueError(f"generator lives on {generator.device} but V on {V.device}")
    ref = _reference(V, kind).to(dtype)
    return V, n_trials, ref


def jl_max_distortion(V: Any, n_out: int, n_trials: int, *, kind: str = "distance",
                      generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32,
                      trial_batch: int | None = None) -> torch.Tensor:
    """Per-trial worst pair deviation of ``n_trials`` independent Gaussian projections of V to ``n_out`` dimensions.

    Args:
        V: points, shape (N, m), N >= 2 (numpy or torch; the reference distances are computed in float64).
        n_out: target dimension n (the JL matrix has i.i.d. N(0, 1/n) entries).
        n_trials: number of independent projections T.
        kind: ``"distance"`` (max |ratio of squared distances - 1|) or ``"inner_product"`` (max |Gram error|).
        generator: torch generator on V's device (None: torch's global generator).
        dtype: dtype of the sampled projections and their Gram matrices; float32 is ~3x faster and accurate to
            ~1e-6 relative here (distances are not small differences of large numbers unless points nearly coincide).
        trial_batch: trials per block (default: as many as fit a budget of 2^23 elements per block).

    Returns:
        float64 tensor of shape (T,) on V's device.
    """
    V, n_trials, ref = _prepare(V, n_trials, kind, generator, dtype)
    n_out = positive_int(n_out, "n_out")
    batch = _batch_size(trial_batch, V.shape[0], n_out, n_trials)
    out = []
    for start in range(0, n_trials, batch):
        size = min(batch, n_trials - start)
        W = projected_gram_sample(V, n_out, size, generator=generator, dtype=dtype)  # (B, N, n_out)
        out.append(_max_deviation(W @ W.transpose(1, 2), ref, kind))
    return torch.cat(out)


def jl_max_distortion_nested(V: Any, n_grid: Sequence[int], n_trials: int, *, kind: str = "distance",
                             generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32,
                             trial_batch: int | None = None) -> torch.Tensor:
    """Like :func:`jl_max_distortion` for every n of ``n_grid`` at once, with *nested* projections.

    Each trial draws one projection to n_max = max(n_grid) dimensions; its first n coordinates, rescaled by
    sqrt(n_max / n), are exactly a JL projection to n dimensions (the rows of A are i.i.d.). The Gram matrices are
    accumulated coordinate block by coordinate block, so the whole curve costs about as much as the largest n alone.
    Every entry has the law of :func:`jl_max_distortion`, but entries of one trial are correlated across n
    (smooth curves, cheap widgets); use independent calls where independence across n matters.

    Returns:
        float64 tensor of shape (len(n_grid), T) on V's device (rows in the order of ``n_grid``).
    """
    V, n_trials, ref = _prepare(V, n_trials, kind, generator, dtype)
    grid = [positive_int(k, "n_grid entry") for k in n_grid]
    if not grid:
        raise ValueError("n_grid must not be empty")
    order = sorted(set(grid))
    n_max = order[-1]
    batch = _batch_size(trial_batch, V.shape[0], n_max, n_trials)
    rows: dict[int, list[torch.Tensor]] = {k: [] for k in order}
    for start in range(0, n_trials, batch):
        size = min(batch, n_trials - start)
        W = projected_gram_sample(V, n_max, size, generator=generator, dtype=dtype)  # (B, N, n_max), scale 1/n_max
        gram = torch.zeros(size, V.shape[0], V.shape[0], dtype=dtype, device=V.device)
        done = 0
        for k in order:
            block = W[:, :, done:k]
            gram.add_(block @ block.transpose(1, 2))
            done = k
            rows[k].append(_max_deviation(gram * (n_max / k), ref, kind))
    table = {k: torch.cat(v) for k, v in rows.items()}
    return torch.stack([table[k] for k in grid])


def jl_success_rate(V: Any, n_out: int, n_trials: int, eps: float, *, kind: str = "distance",
                    generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32,
                    trial_batch: int | None = None) -> float:
    """Fraction of ``n_trials`` independent projections whose worst pair deviation is <= eps (see
    :func:`jl_max_distortion` for the arguments; eps in (0, 1))."""
    eps = open_unit_interval(eps, "eps")
    dist = jl_max_distortion(V, n_out, n_trials, kind=kind, generator=generator, dtype=dtype, trial_batch=trial_batch)
    return float((dist <= eps).double().mean())


def jl_success_curve(V: Any, n_grid: Sequence[int], n_trials: int, eps: float, *, kind: str = "distance",
                     generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32,
                     trial_batch: int | None = None, nested: bool = False) -> np.ndarray:
    """Success rates at every n of ``n_grid`` (float64 numpy array of len(n_grid)).

    ``nested=False`` (default): independent trials for every n; ``nested=True``: the cheaper coupled curve of
    :func:`jl_max_distortion_nested`.
    """
    eps = open_unit_interval(eps, "eps")
    if nested:
        dist = jl_max_distortion_nested(V, n_grid, n_trials, kind=kind, generator=generator, dtype=dtype,
                                        trial_batch=trial_batch)
        return (dist <= eps).double().mean(dim=1).cpu().numpy()
    if len(n_grid) == 0:
        raise ValueError("n_grid must not be empty")
    return np.array([jl_success_rate(V, int(k), n_trials, eps, kind=kind, generator=generator, dtype=dtype,
                                     trial_batch=trial_batch) for k in n_grid])


def first_n_reaching(n_grid: Sequence[int], rates: Sequence[float], p: float) -> int | None:
    """The first n of ``n_grid`` (in the given order) whose success rate is >= p, or None when none is.

    No monotonicity is assumed or enforced. ``rates`` must have the length of ``n_grid``; p in [0, 1].
    """
    grid = np.asarray(n_grid)
    rates = np.asarray(rates, dtype=np.float64)
    if grid.ndim != 1 or rates.shape != grid.shape:
        raise ValueError(f"n_grid and rates must be 1-D of equal length, got {grid.shape} and {rates.shape}")
    if not 0.0 <= float(p) <= 1.0:
        raise ValueError(f"p must lie in [0, 1], got {p!r}")
    hits = np.flatnonzero(rates >= p)
    return int(grid[hits[0]]) if hits.size else None


def jl_dimension_bounds(num_points: int, eps: float) -> dict[str, float]:
    """Sufficient target dimensions for N points and distortion eps.

    * ``"article_24"`` = 24 log N / eps^2 (the article: success probability >= 1 - 1/N),
    * ``"article_16"`` = 16 log N / eps^2 (the article: success probability >= 1/N > 0),
    * ``"sklearn"`` = 4 log N / (eps^2/2 - eps^3/3) (scikit-learn's ``johnson_lindenstrauss_min_dim`` before it
      truncates to an integer; it also only guarantees success probability >= 1/N).
    """
    num_points = positive_int(num_points, "num_points", minimum=2)
    eps = open_unit_interval(eps, "eps")
    log_n = math.log(num_points)
    return {"article_24": 24.0 * log_n / eps**2, "article_16": 16.0 * log_n / eps**2,
            "sklearn": 4.0 * log_n / (eps**2 / 2.0 - eps**3 / 3.0)}


def jl_union_bound(num_points: int, n_out: int, eps: float, *, kind: str = "distance") -> float:
    """The article's union bound on the failure probability of one projection.

    ``"distance"``: C(N, 2) pairs x 2 e^{-eps^2 n / 8} = N (N - 1) e^{-eps^2 n / 8};
    ``"inner_product"``: twice that (the N (N - 1) vectors v_i +- v_j). May exceed 1 (vacuous).
    """
    if kind not in _KINDS:
        raise ValueError(f"kind must be one of {_KINDS}, got {kind!r}")
    num_points = positive_int(num_points, "num_points", minimum=2)
    n_out = positive_int(n_out, "n_out")
    eps = open_unit_interval(eps, "eps")
    factor = 1.0 if kind == "distance" else 2.0
    return factor * num_points * (num_points - 1) * math.exp(-eps**2 * n_out / 8.0)


def fixed_vector_projections(u: Any, n_out: int, num_draws: int, *, generator: torch.Generator | None = None,
                             chunk_size: int = 1000) -> torch.Tensor:
    """Samples of A u for ``num_draws`` independent JL matrices A (n_out, m) with i.i.d. N(0, 1/n_out) entries.

    Args:
        u: a fixed vector, shape (m,) (its dtype is used; numpy accepted).
        n_out: rows of A. num_draws: number of matrices. chunk_size: matrices drawn at once as a
            (chunk, n_out, m) tensor (memory chunk * n_out * m elements).
        generator: torch generator on u's device.

    Returns:
        Tensor (num_draws, n_out) on u's device. In law A u ~ N(0, ||u||^2 / n_out I).
    """
    u = as_float_tensor(u, "u", ndim=1)
    n_out = positive_int(n_out, "n_out")
    num_draws = positive_int(num_draws, "num_draws")
    chunk_size = positive_int(chunk_size, "chunk_size")
    if generator is not None and generator.device.type != u.device.type:
        raise ValueError(f"generator lives on {generator.device} but u on {u.device}")
    out = []
    for start in range(0, num_draws, chunk_size):
        size = min(chunk_size, num_draws - start)
        A = torch.randn(size, n_out, u.shape[0], generator=generator, device=u.device, dtype=u.dtype)
        out.append((A @ u) / math.sqrt(n_out))
    return torch.cat(out)


def near_orthogonality(W: Any, *, singular_values: bool = True) -> dict[str, Any]:
    """How close a square (or tall) matrix W (n_rows, n) is to having orthonormal columns.

    Returns a dict with ``max_diag`` = max_i |(W^T W)_ii - 1| (column norms), ``max_offdiag`` = max_{i != j}
    |(W^T W)_ij| (column inner products), and, with ``singular_values=True``, ``s`` (all singular values, descending,
    a numpy array), ``s_max``, ``s_min`` and ``op_dev`` = ||W^T W - I||_2 = max(|s_max^2 - 1|, |s_min^2 - 1|).
    Computed in W's dtype on W's device (use float64 for exact checks).
    """
    W = as_float_tensor(W, "W", ndim=2)
    if W.shape[0] < W.shape[1]:
        raise ValueError(f"W must have at least as many rows as columns, got shape {tuple(W.shape)}")
    gram = W.T @ W
    diag = torch.diagonal(gram)
    out: dict[str, Any] = {"max_diag": float((diag - 1).abs().max())}
    gram.fill_diagonal_(0.0)
    out["max_offdiag"] = float(gram.abs().max()) if W.shape[1] > 1 else 0.0
    if singular_values:
        s = torch.linalg.svdvals(W).cpu().numpy()
        out.update(s=s, s_max=float(s[0]), s_min=float(s[-1]),
                   op_dev=float(max(abs(s[0] ** 2 - 1), abs(s[-1] ** 2 - 1))))
    return out
