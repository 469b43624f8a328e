"""Random projections and pairwise geometry of point clouds (torch; CUDA when the input lives there).

Conventions: a point cloud is a tensor of shape (N, m) (N points in m dimensions). Kernels accept numpy arrays too,
return torch tensors on the input's device, and keep memory bounded by working in row blocks of ``chunk_size``.
"""
from __future__ import annotations

import math
from typing import Any

import torch

from ._validation import as_float_tensor, positive_int
from .hubness import knn_indices

__all__ = ["gaussian_projection", "projected_gram_sample", "pairwise_sq_dists", "jl_distortion",
           "random_sphere", "topk_neighbors", "recall_at_k"]


def gaussian_projection(n_out: int, n_in: int, *, generator: torch.Generator | None = None,
                        device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A random JL matrix A with i.i.d. N(0, 1/n_out) entries (variance 1/n_out), shape (n_out, n_in).

    ``device`` defaults to the generator's device (CPU without a generator). With this scaling
    E||A v||^2 = ||v||^2 for every v.
    """
    n_out = positive_int(n_out, "n_out")
    n_in = positive_int(n_in, "n_in")
    if not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating dtype, got {dtype}")
    dev = torch.device(device) if device is not None else (generator.device if generator is not None else None)
    a = torch.randn(n_out, n_in, generator=generator, device=dev, dtype=dtype)
    return a / math.sqrt(n_out)


def projected_gram_sample(V: Any, n_out: int, n_trials: int, *, generator: torch.Generator | None = None,
                          dtype: torch.dtype | None = None) -> torch.Tensor:
    """Samples of the projected cloud W = V A^T for ``n_trials`` independent JL matrices A (n_out, m).

    Exact in law and cheap when m >> N: the rows of A are i.i.d. N(0, I_m / n_out), so each column of W is
    N(0, V V^T / n_out) independently; hence W = L Z / sqrt(n_out) with L L^T = V V^T (Cholesky, computed in float64)
    and Z standard normal of shape (N, n_out). When N > m the explicit product with fresh A is cheaper and is used.

    Args:
        V: points, shape (N, m).
        n_out: target dimension n.
        n_trials: number of independent projections T.
        generator: torch generator (its device must match V's).
        dtype: dtype of the samples (default V's dtype; float32 is ~3x faster and fine for distances of order m).

    Returns:
        Tensor of shape (T, N, n_out) on V's device.
    """
    V = as_float_tensor(V, "V", ndim=2)
    n_out = positive_int(n_out, "n_out")
    n_trials = positive_int(n_trials, "n_trials")
    dtype = dtype or V.dtype
    num_points, dim = V.shape
    if num_points > dim:
        A = torch.randn(n_trials, n_out, dim, generator=generator, device=V.device, dtype=dtype) / math.sqrt(n_out)
        return V.to(dtype) @ A.transpose(1, 2)
    gram = V.to(torch.float64) @ V.to(torch.float64).T
    try:
        factor = torch.linalg.cholesky(gram)
    except RuntimeError:  # singular Gram matrix (repeated or linearly dependent points): any square root works
        eigval, eigvec = torch.linalg.eigh(gram)
        factor = eigvec * eigval.clamp_min(0).sqrt()
    Z = torch.randn(n_trials, num_points, n_out, generator=generator, device=V.device, dtype=dtype)
    return (factor.to(dtype) @ Z) / math.sqrt(n_out)


def pairwise_sq_dists(X: Any, Y: Any | None = None, *, chunk_size: int = 4096) -> torch.Tensor:
    """Squared Euclidean distances ||x_i - y_j||^2 by the Gram trick, clamped at 0.

    Args:
        X: shape (N, m). Y: shape (M, m), default X (then the diagonal is exactly 0).
        chunk_size: rows of X per block (bounds the temporary memory to chunk_size x M).

    Returns:
        Tensor (N, M) with X's dtype, on X's device. In float32, distances between nearby points lose
        precision (cancellation in |x|^2 + |y|^2 - 2<x,y>): use float64 for exact checks.
    """
    X = as_float_tensor(X, "X", ndim=2)
    same = Y is None
    Y = X if same else as_float_tensor(Y, "Y", ndim=2).to(device=X.device, dtype=X.dtype)
    if X.shape[1] != Y.shape[1]:
        raise ValueError(f"X and Y must have the same dimension, got {X.shape[1]} and {Y.shape[1]}")
    chunk_size = positive_int(chunk_size, "chunk_size")
    y_sq = (Y * Y).sum(dim=1)
    out = torch.empty(X.shape[0], Y.shape[0], dtype=X.dtype, device=X.device)
    for start in range(0, X.shape[0], chunk_size):
        block = X[start:start + chunk_size]
        target = out[start:start + chunk_size]
        torch.add((block * block).sum(dim=1, keepdim=True), y_sq, out=target)  # |x|^2 + |y|^2
        target.addmm_(block, Y.T, alpha=-2.0)  # ... - 2 <x, y>, in place: one temporary-free pass
        target.clamp_min_(0.0)
    if same:
        out.fill_diagonal_(0.0)
    return out


def jl_distortion(X: Any, Z: Any, *, chunk_size: int = 4096) -> dict[str, float]:
    """Distortion of squared pairwise distances when the cloud X (N, m) is mapped to Z (N, n).

    Over all unordered pairs i < j, with r_ij = ||z_i - z_j||^2 / ||x_i - x_j||^2, returns
    ``max_abs`` = max |r - 1|, ``mean_abs`` = mean |r - 1|, ``min_ratio``, ``max_ratio`` and ``num_pairs``.
    Works block by block (memory chunk_size x N); the N x N matrices are never held at once.
    """
    X = as_float_tensor(X, "X", ndim=2)
    Z = as_float_tensor(Z, "Z", ndim=2).to(X.device)
    if X.shape[0] != Z.shape[0]:
        raise ValueError(f"X and Z must hold the same number of points, got {X.shape[0]} and {Z.shape[0]}")
    num_points = X.shape[0]
    if num_points < 2:
        raise ValueError("jl_distortion needs at least 2 points")
    chunk_size = positive_int(chunk_size, "chunk_size")
    max_abs, total, lo, hi = 0.0, 0.0, math.inf, -math.inf
    for start in range(0, num_points - 1, chunk_size):
        stop = min(start + chunk_size, num_points)
        # rows start..stop-1 against columns start..N-1: only pairs i < j are needed
        dx = pairwise_sq_dists(X[start:stop], X[start:])
        dz = pairwise_sq_dists(Z[start:stop], Z[start:])
        # pairs j <= i sit in the lower triangle of the block (column offset <= row offset): make their ratio 1
        lower = torch.ones(dx.shape, dtype=torch.bool, device=dx.device).tril_()
        dx.masked_fill_(lower, 1.0)
        dz.masked_fill_(lower, 1.0)
        if bool((dx <= 0).any()):
            raise ValueError("X contains repeated points (zero distance): the distortion ratio is undefined")
        ratio = dz.div_(dx).to(torch.float64)
        lo = min(lo, float(ratio.masked_fill(lower, math.inf).min()))
        hi = max(hi, float(ratio.masked_fill(lower, -math.inf).max()))
        dev = ratio.sub_(1.0).abs_()
        max_abs = max(max_abs, float(dev.max()))
        total += float(dev.sum())
    num_pairs = num_points * (num_points - 1) // 2
    return {"max_abs": max_abs, "mean_abs": total / num_pairs, "min_ratio": lo, "max_ratio": hi,
            "num_pairs": num_pairs}


def random_sphere(num_points: int, dim: int, radius: float = 1.0, *, generator: torch.Generator | None = None,
                  device: torch.device | str | None = None, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """``num_points`` points uniform on the sphere of radius ``radius`` in R^dim (normalised Gaussians), (N, dim)."""
    num_points = positive_int(num_points, "num_points")
    dim = positive_int(dim, "dim")
    if not radius > 0:
        raise ValueError(f"radius must be positive, got {radius!r}")
    dev = torch.device(device) if device is not None else (generator.device if generator is not None else None)
    g = torch.randn(num_points, dim, generator=generator, device=dev, dtype=dtype)
    return radius * g / g.norm(dim=1, keepdim=True)




def topk_neighbors(X: Any, k: int, *, Y: Any | None = None, metric: str = "cosine", exclude_self: bool = True,
                   chunk_size: int | None = None) -> torch.Tensor:
    """Indices of the k nearest neighbours of each row of X among the rows of Y (default Y = X).

    Args:
        X: queries (N, m). Y: database (M, m), default X.
        k: neighbours per query (k <= M, or M - 1 when excluding self).
        metric: ``"cosine"`` (largest cosine), ``"ip"`` (largest inner product) or ``"euclidean"`` (smallest distance).
        exclude_self: when Y is X, a point is not its own neighbour.
        chunk_size: queries per block (default: automatic); memory is about chunk_size x M scores, the N x M matrix
            is never materialised.

    Returns:
        LongTensor (N, k), best neighbour first, on X's device.

    The work is done by :func:`utils.hubness.knn_indices`, the book's exact blocked k-NN kernel (two-stage top-k,
    benchmarked against faiss and scikit-learn in ``bench/bench_hubness.py``); this name keeps the geometry API.
    """
    return knn_indices(X, k, Y=Y, metric=metric, exclude_self=exclude_self, chunk_size=chunk_size)


def recall_at_k(true_idx: Any, approx_idx: Any) -> float:
    """Mean over queries of |true ∩ approx| / k for two (N, k) index tensors (order inside a row is ignored)."""
    true_idx = torch.as_tensor(true_idx)
    approx_idx = torch.as_tensor(approx_idx).to(true_idx.device)
    if true_idx.ndim != 2 or true_idx.shape != approx_idx.shape:
        raise ValueError(f"true_idx and approx_idx must both have shape (N, k), got {tuple(true_idx.shape)} "
                         f"and {tuple(approx_idx.shape)}")
    if true_idx.dtype.is_floating_point or approx_idx.dtype.is_floating_point:
        raise ValueError("index tensors must be integer-valued")
    hits = (true_idx.unsqueeze(2) == approx_idx.unsqueeze(1)).any(dim=2).sum(dim=1)
    return float(hits.double().mean() / true_idx.shape[1])
