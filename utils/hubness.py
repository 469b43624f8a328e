"""Hubness: exact k-nearest-neighbour occurrence counts (k-occurrence) and the statistics built on them.

Conventions: a point cloud is a tensor of shape (N, m). Kernels accept numpy arrays too, return torch tensors on the
input's device (CUDA when the input lives there) and never hold the N x N similarity matrix: queries are processed in
blocks whose score matrix is ``chunk x N``.

The k-NN kernel (:func:`knn_indices`) is faster than a plain "score block + torch.topk" loop
(:func:`utils.geometry.topk_neighbors`) on CPU, because selecting k of N entries per row dominates once the matrix
product runs on BLAS. It uses an exact two-stage selection: the score row is cut into groups of ``group_size``
columns, the k groups with the largest maxima are kept, and the top k is taken among their ``k * group_size``
entries. This is exact: each of the k best entries lies in a group whose maximum is at least the k-th best value, and
a group left out has a maximum no larger than those of the k groups kept, which already supply k entries at least as
large (so the selected *values* are always the true top k; indices can differ only between exactly tied scores).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from ._validation import as_float_tensor, positive_int

__all__ = ["knn_indices", "hub_counts", "hubness_stats", "log_ball_cube_ratio", "hub_filtered_latents",
           "article_hub_counts"]

_METRICS = ("euclidean", "cosine", "ip")
_CPU_BLOCK_ELEMS = 1 << 21  # CPU: about 8 MiB of float32 scores per query block (measured sweet spot, see bench/)


def _auto_chunk(num_db: int, device: torch.device) -> int:
    if device.type == "cuda":
        return 4096
    return int(min(4096, max(16, _CPU_BLOCK_ELEMS // max(num_db, 1))))


def _block_topk(score: torch.Tensor, k: int, group_size: int) -> torch.Tensor:
    """Column indices of the k largest entries of each row of ``score`` (rows, M), best first, exact.

    ``score`` has M = num_groups * group_size columns (padded with -inf by the caller) when ``group_size > 1``.
    """
    rows, width = score.shape
    num_groups = width // group_size
    if group_size <= 1 or num_groups <= k:
        return torch.topk(score, k, dim=1).indices
    grouped = score.view(rows, num_groups, group_size)
    best_groups = grouped.amax(dim=2).topk(k, dim=1).indices  # (rows, k): groups holding the k best entries
    candidates = grouped.gather(1, best_groups.unsqueeze(2).expand(rows, k, group_size)).reshape(rows, k * group_size)
    local = candidates.topk(k, dim=1).indices  # (rows, k) positions among the k * group_size candidates
    offsets = torch.arange(group_size, device=score.device)
    columns = (best_groups.unsqueeze(2) * group_size + offsets).reshape(rows, k * group_size)
    return columns.gather(1, local)


def knn_indices(X: Any, k: int, *, Y: Any | None = None, metric: str = "euclidean", exclude_self: bool = True,
                chunk_size: int | None = None, group_size: int = 128) -> torch.Tensor:
    """Exact k nearest neighbours of every row of X among the rows of Y (default Y = X), best first.

    Args:
        X: queries, shape (N, m), float32 or float64 (numpy accepted; integers become float64).
        k: neighbours per query; 1 <= k <= M (M - 1 when a point's own index is excluded).
        Y: database, shape (M, m); default X. Converted to X's dtype and device.
        metric: ``"euclidean"`` (smallest distance; scores 2<x,y> - |y|^2, no square roots), ``"cosine"`` (largest
            cosine; rows normalised first, zero rows stay zero) or ``"ip"`` (largest inner product).
        exclude_self: when Y is X (Y omitted), a point is not its own neighbour (its score is set to -inf, never
            left to rounding as in "argsort and skip rank 0").
        chunk_size: queries per block; temporary memory is about ``chunk_size * M`` scores (plus the padded copy of
            Y). Default: 4096 on CUDA; on CPU a cache-friendly block of about 2^21 scores (16 to 4096 rows). With
            several torch threads on CPU, query blocks are processed in parallel (one block per thread).
        group_size: columns per group of the exact two-stage top-k (see the module docstring); 1 means plain topk.

    Returns:
        LongTensor (N, k) on X's device. Rows are ordered best first; exact ties are broken arbitrarily.

    Raises:
        ValueError: bad shapes, metric, k, non-finite input, chunk or group sizes.
    """
    if metric not in _METRICS:
        raise ValueError(f"metric must be one of {_METRICS}, got {metric!r}")
    X = as_float_tensor(X, "X", ndim=2)
    same = Y is None
    Y = X if same else as_float_tensor(Y, "Y", ndim=2).to(device=X.device, dtype=X.dtype)
    if X.shape[1] != Y.shape[1]:
        raise ValueError(f"X and Y must have the same dimension, got {X.shape[1]} and {Y.shape[1]}")
    if X.shape[0] == 0 or Y.shape[0] == 0:
        raise ValueError("X and Y must hold at least one point each")
    if not bool(torch.isfinite(X).all()) or (not same and not bool(torch.isfinite(Y).all())):
        raise ValueError("X and Y must be finite (no NaN or inf)")
    k = positive_int(k, "k")
    exclude = same and exclude_self
    available = Y.shape[0] - (1 if exclude else 0)
    if k > available:
        raise ValueError(f"k = {k} exceeds the {available} available neighbours")
    group_size = positive_int(group_size, "group_size")
    num_db = Y.shape[0]
    chunk_size = _auto_chunk(num_db, X.device) if chunk_size is None else positive_int(chunk_size, "chunk_size")

    if metric == "cosine":
        tiny = torch.finfo(X.dtype).tiny
        X = X / X.norm(dim=1, keepdim=True).clamp_min(tiny)
        Y = X if same else Y / Y.norm(dim=1, keepdim=True).clamp_min(tiny)
    # Score bias per database point: -|y|^2 for Euclidean (-||x-y||^2 = 2<x,y> - |y|^2 - |x|^2), 0 otherwise.
    # Padding rows (zeros) get bias -inf so that the grouped selection never picks them.
    use_groups = group_size > 1 and num_db // group_size > k
    pad = (-num_db) % group_size if use_groups else 0
    bias = -(Y * Y).sum(dim=1) if metric == "euclidean" else Y.new_zeros(num_db)
    if pad:
        Y_pad = torch.cat([Y, Y.new_zeros(pad, Y.shape[1])])
        bias = torch.cat([bias, bias.new_full((pad,), -torch.inf)])
    else:
        Y_pad = Y
    alpha = 2.0 if metric == "euclidean" else 1.0
    Yt = Y_pad.T
    out = torch.empty(X.shape[0], k, dtype=torch.long, device=X.device)

    def run_block(start: int) -> None:
        block = X[start:start + chunk_size]
        score = torch.addmm(bias, block, Yt, alpha=alpha)  # (chunk, M + pad): larger is nearer
        if exclude:
            rows = torch.arange(block.shape[0], device=X.device)
            score[rows, rows + start] = -torch.inf
        out[start:start + block.shape[0]] = _block_topk(score, k, group_size if use_groups else 1)

    starts = range(0, X.shape[0], chunk_size)
    threads = torch.get_num_threads()
    if X.device.type != "cpu" or threads <= 1 or len(starts) < 2 * threads:
        for start in starts:
            run_block(start)
        return out
    # CPU with several threads: coarse-grained parallelism over query blocks (torch releases the GIL), each block
    # single-threaded; many small intra-op parallel regions scale poorly. The thread setting is restored after.
    from concurrent.futures import ThreadPoolExecutor
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            list(pool.map(run_block, starts))
    finally:
        torch.set_num_threads(threads)
    return out


def hub_counts(X: Any, k: int, **knn_kwargs: Any) -> torch.Tensor:
    """Hub values N_k(j) = #{i : j is among the k nearest neighbours of i}, a LongTensor (M,) (M = N without Y).

    Keyword arguments go to :func:`knn_indices` (metric, exclude_self, Y, chunk_size, group_size). The counts sum
    to N * k exactly.
    """
    idx = knn_indices(X, k, **knn_kwargs)
    Y = knn_kwargs.get("Y")
    num_db = idx.shape[0] if Y is None else len(Y)
    return torch.bincount(idx.reshape(-1), minlength=num_db)


def hubness_stats(counts: Any, *, top_fraction: float = 0.2) -> dict[str, float]:
    """Summary statistics of hub values (a 1-D array of non-negative counts, at least 2 entries).

    Returns a dict with ``mean``, ``skewness`` (biased Fisher-Pearson, as ``scipy.stats.skew`` by default; 0 when
    all counts are equal), ``top_share`` (sum of the floor(top_fraction * N) largest counts over the total),
    ``gini`` (Gini coefficient, 0 = equal, -> 1 = one point holds everything), ``max`` and ``zero_fraction``
    (fraction of "anti-hubs" with count 0). Computed in float64 on the CPU.
    """
    c = torch.as_tensor(np.asarray(counts) if not isinstance(counts, torch.Tensor) else counts)
    if c.ndim != 1 or c.numel() < 2:
        raise ValueError(f"counts must be a 1-D array with at least 2 entries, got shape {tuple(c.shape)}")
    if c.dtype == torch.bool or c.is_complex():
        raise ValueError(f"counts must be real numbers, got dtype {c.dtype}")
    c = c.detach().to("cpu", torch.float64)
    if not bool(torch.isfinite(c).all()) or bool((c < 0).any()):
        raise ValueError("counts must be finite and non-negative")
    if not 0.0 < float(top_fraction) <= 1.0:
        raise ValueError(f"top_fraction must lie in (0, 1], got {top_fraction!r}")
    total = float(c.sum())
    if total <= 0:
        raise ValueError("counts must not all be zero")
    n = c.numel()
    mean = total / n
    centred = c - mean
    m2 = float((centred ** 2).mean())
    skew = float((centred ** 3).mean()) / m2 ** 1.5 if m2 > 0 else 0.0
    top = max(1, int(math.floor(top_fraction * n)))
    ordered = torch.sort(c).values  # ascending
    top_share = float(ordered[-top:].sum()) / total
    ranks = torch.arange(1, n + 1, dtype=torch.float64)
    gini = float(((2 * ranks - n - 1) * ordered).sum()) / (n * total)
    return {"mean": mean, "skewness": skew, "top_share": top_share, "gini": gini, "max": float(ordered[-1]),
            "zero_fraction": float((c == 0).double().mean())}


def log_ball_cube_ratio(n: Any) -> torch.Tensor:
    """log(V_n / 2^n): V_n = pi^(n/2) / Gamma(n/2 + 1) is the unit n-ball's volume, 2^n that of [-1, 1]^n.

    ``n``: a positive integer or an integer array/tensor of them. Returns float64 (same shape; 0-d for an int), via
    lgamma, so it stays finite where the ratio itself underflows (n ~ 1000s).
    """
    t = torch.as_tensor(n)
    if t.dtype == torch.bool or t.is_floating_point() or t.is_complex():
        raise ValueError(f"n must be a positive integer (or integer array), got dtype {t.dtype}")
    if t.numel() == 0 or bool((t < 1).any()):
        raise ValueError("n must be >= 1")
    x = t.to(torch.float64)
    return 0.5 * x * math.log(math.pi) - torch.lgamma(0.5 * x + 1.0) - x * math.log(2.0)


def hub_filtered_latents(size: int, z_dim: int, *, t: int = 50, k: int = 5, batch: int = 10000,
                         generator: torch.Generator | None = None, device: torch.device | str | None = None,
                         dtype: torch.dtype = torch.float64, max_batches: int = 1000) -> torch.Tensor:
    """The article's hub-filtered latent sampler, vectorised: draw z ~ N(0, I) in batches of ``batch``, keep
    the z whose hub value within the batch (k-NN, Euclidean, self excluded) is strictly greater than ``t``
    (the article's code uses ``s > t``), until ``size`` latents are collected.

    Returns a tensor (size, z_dim) of ``dtype`` on ``device`` (default: the generator's device, else CPU).
    Raises ValueError for bad arguments and RuntimeError when ``max_batches`` batches do not yield ``size``
    latents (in low dimension almost no point reaches t = 50: the acceptance is 0 at z_dim = 16).
    """
    size = positive_int(size, "size")
    z_dim = positive_int(z_dim, "z_dim")
    k = positive_int(k, "k")
    batch = positive_int(batch, "batch", minimum=2)
    max_batches = positive_int(max_batches, "max_batches")
    if isinstance(t, bool) or not isinstance(t, (int, np.integer)) or t < 0:
        raise ValueError(f"t must be a non-negative integer, got {t!r}")
    if k >= batch:
        raise ValueError(f"k = {k} must be smaller than batch = {batch}")
    if not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating dtype, got {dtype}")
    dev = torch.device(device) if device is not None else (generator.device if generator is not None else None)
    kept: list[torch.Tensor] = []
    collected = 0
    for _ in range(max_batches):
        z = torch.randn(batch, z_dim, generator=generator, device=dev, dtype=dtype)
        z = z[hub_counts(z, k) > t]
        kept.append(z)
        collected += z.shape[0]
        if collected >= size:
            return torch.cat(kept)[:size]
    raise RuntimeError(f"only {collected} of {size} latents passed hub value > {t} in {max_batches} batches "
                       f"of {batch} (z_dim = {z_dim})")


def article_hub_counts(z: Any, k: int = 5, num_chunks: int = 10) -> np.ndarray:
    """The article's literal NumPy loop (reference only, O(N^2 log N)): hub values of the rows of z (N, d).

    For each of ``num_chunks`` query blocks, squared distances by the Gram identity against all points, a full
    ``argsort`` along axis 0 and ranks 1..k (rank 0 assumed to be the point itself). Returns int64 counts (N,).
    """
    z = np.asarray(z, dtype=np.float64)
    if z.ndim != 2 or z.shape[0] < 2:
        raise ValueError(f"z must have shape (N, d) with N >= 2, got {z.shape}")
    k = positive_int(k, "k")
    num_chunks = positive_int(num_chunks, "num_chunks")
    n = z.shape[0]
    if n % num_chunks or k >= n:
        raise ValueError(f"need N divisible by num_chunks and k < N, got N = {n}, num_chunks = {num_chunks}, k = {k}")
    step = n // num_chunks
    s = np.zeros(n, dtype=np.int64)
    sq = (z ** 2).sum(1)
    for i in range(num_chunks):
        zi = z[i * step:(i + 1) * step]
        d = sq[:, None] + (zi ** 2).sum(1)[None] - 2 * z.dot(zi.T)  # (N, step): column j = distances to query j
        for j in d.argsort(0)[1:1 + k].reshape(-1):
            s[j] += 1
    return s
