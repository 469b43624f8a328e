"""Locality-sensitive hashing for cosine similarity: sign codes of random Gaussian projections (SimHash).

For w ~ N(0, I_m) and two vectors u, v at angle theta, P(sign<w, u> != sign<w, v>) = theta / pi (Charikar 2002).
With n_bits independent rows the Hamming distance between two codes is Binomial(n_bits, theta / pi), so
cos(pi * hamming / n_bits) estimates cos(theta).

Conventions: codes are boolean tensors of shape (N, n_bits) (True where the projection is positive). Kernels accept
numpy arrays too, return torch tensors on the input's device (CUDA when the input is there) and bound memory by
working in row blocks of ``chunk_size``.
"""
from __future__ import annotations

import math
from typing import Any

import torch

from ._validation import as_float_tensor, positive_int

__all__ = ["simhash_codes", "hamming_distance", "hamming_neighbors", "cosine_from_hamming", "vector_at_angle"]


def _as_codes(codes: Any, name: str) -> torch.Tensor:
    codes = torch.as_tensor(codes)
    if codes.ndim != 2:
        raise ValueError(f"{name} must have shape (N, n_bits), got {tuple(codes.shape)}")
    if codes.dtype != torch.bool:
        if codes.dtype.is_floating_point or codes.is_complex():
            raise ValueError(f"{name} must be a boolean (or 0/1 integer) tensor, got dtype {codes.dtype}")
        if bool(((codes != 0) & (codes != 1)).any()):
            raise ValueError(f"{name} must contain only 0/1 values")
        codes = codes.bool()
    if codes.shape[1] == 0:
        raise ValueError(f"{name} has no bits")
    return codes


def simhash_codes(X: Any, n_bits: int, *, generator: torch.Generator | None = None,
                  planes: Any | None = None) -> torch.Tensor:
    """Sign codes h(x) = [<w_b, x> > 0]_{b < n_bits} with w_b ~ N(0, I_m) i.i.d. (the rows of a Gaussian matrix).

    Args:
        X: vectors, shape (N, m) (any scale: the signs are invariant to a positive rescaling of x or of W).
        n_bits: number of hyperplanes (bits per code).
        generator: torch generator for the hyperplanes. They are drawn on the generator's device (CPU without one)
            in X's dtype and moved to X's device, so a CPU generator gives the same codes on CPU and CUDA.
        planes: optional explicit hyperplanes, shape (n_bits, m) (then ``generator`` is not used).

    Returns:
        BoolTensor of shape (N, n_bits) on X's device.
    """
    X = as_float_tensor(X, "X", ndim=2)
    n_bits = positive_int(n_bits, "n_bits")
    if X.shape[1] == 0:
        raise ValueError("X has dimension 0")
    if planes is None:
        dev = generator.device if generator is not None else torch.device("cpu")
        planes = torch.randn(n_bits, X.shape[1], generator=generator, device=dev, dtype=X.dtype)
    else:
        planes = as_float_tensor(planes, "planes", ndim=2)
        if planes.shape != (n_bits, X.shape[1]):
            raise ValueError(f"planes must have shape ({n_bits}, {X.shape[1]}), got {tuple(planes.shape)}")
    planes = planes.to(device=X.device, dtype=X.dtype)
    return (X @ planes.T) > 0


def hamming_distance(codes_a: Any, codes_b: Any | None = None, *, chunk_size: int = 4096) -> torch.Tensor:
    """Pairwise Hamming distances between the rows of two code matrices.

    Computed with the +-1 trick: for s = 2c - 1, <s_a, s_b> = n_bits - 2 * hamming, one matrix product per block
    (float32 products of +-1 are exact as long as n_bits < 2^24).

    Args:
        codes_a: (N, n_bits) boolean (or 0/1 integer) codes. codes_b: (M, n_bits), default codes_a.
        chunk_size: rows of codes_a per block (temporary memory chunk_size x M).

    Returns:
        int32 tensor (N, M) on codes_a's device.
    """
    codes_a = _as_codes(codes_a, "codes_a")
    codes_b = codes_a if codes_b is None else _as_codes(codes_b, "codes_b").to(codes_a.device)
    if codes_a.shape[1] != codes_b.shape[1]:
        raise ValueError(f"codes_a and codes_b must have the same number of bits, got {codes_a.shape[1]} "
                         f"and {codes_b.shape[1]}")
    n_bits = codes_a.shape[1]
    if n_bits >= 2**24:
        raise ValueError("n_bits must be < 2^24 (exactness of the float32 product)")
    chunk_size = positive_int(chunk_size, "chunk_size")
    signs_b = codes_b.to(torch.float32) * 2 - 1  # (M, n_bits)
    out = torch.empty(codes_a.shape[0], codes_b.shape[0], dtype=torch.int32, device=codes_a.device)
    for start in range(0, codes_a.shape[0], chunk_size):
        signs_a = codes_a[start:start + chunk_size].to(torch.float32) * 2 - 1
        agree = signs_a @ signs_b.T  # n_bits - 2 * hamming, exact integers
        out[start:start + chunk_size] = ((n_bits - agree) / 2).round_().to(torch.int32)
    return out


def hamming_neighbors(codes: Any, k: int, *, codes_db: Any | None = None, exclude_self: bool = True,
                      chunk_size: int = 1024) -> torch.Tensor:
    """Indices of the k database codes nearest in Hamming distance to each query code (SimHash search).

    Args:
        codes: queries (N, n_bits). codes_db: database (M, n_bits), default ``codes``.
        k: neighbours per query. exclude_self: when the database is the query set, a code is not its own neighbour.
        chunk_size: queries per block (one float32 block of chunk_size x M: 4 GB for 1024 x 10^6).

    Returns:
        LongTensor (N, k) on the queries' device, nearest first. Hamming distances are integers, so ties are
        common; they are broken by torch.topk (i.e. arbitrarily but deterministically).
    """
    codes = _as_codes(codes, "codes")
    same = codes_db is None
    db = codes if same else _as_codes(codes_db, "codes_db").to(codes.device)
    if codes.shape[1] != db.shape[1]:
        raise ValueError(f"codes and codes_db must have the same number of bits, got {codes.shape[1]} "
                         f"and {db.shape[1]}")
    k = positive_int(k, "k")
    exclude = same and exclude_self
    available = db.shape[0] - (1 if exclude else 0)
    if k > available:
        raise ValueError(f"k = {k} exceeds the {available} available neighbours")
    chunk_size = positive_int(chunk_size, "chunk_size")
    signs_db = db.to(torch.float32) * 2 - 1  # (M, n_bits)
    out = torch.empty(codes.shape[0], k, dtype=torch.long, device=codes.device)
    for start in range(0, codes.shape[0], chunk_size):
        signs = codes[start:start + chunk_size].to(torch.float32) * 2 - 1
        agree = signs @ signs_db.T  # (chunk, M) = n_bits - 2 * hamming: largest agreement = nearest
        if exclude:
            rows = torch.arange(agree.shape[0], device=codes.device)
            agree[rows, rows + start] = -torch.inf
        out[start:start + chunk_size] = torch.topk(agree, k, dim=1).indices
    return out


def cosine_from_hamming(hamming: Any, n_bits: int) -> torch.Tensor:
    """The SimHash estimate cos(pi * hamming / n_bits) of the cosine similarity (float64, same shape)."""
    n_bits = positive_int(n_bits, "n_bits")
    hamming = torch.as_tensor(hamming).to(torch.float64)
    if bool(((hamming < 0) | (hamming > n_bits)).any()):
        raise ValueError(f"Hamming distances must lie in [0, n_bits = {n_bits}]")
    return torch.cos(math.pi * hamming / n_bits)


def vector_at_angle(u: Any, theta: Any, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """Unit vectors v = cos(theta) u_hat + sin(theta) w_perp at angle theta from u, where w_perp is a random unit
    vector orthogonal to u, drawn afresh for every output row.

    Args:
        u: reference vector(s), shape (m,) or (T, m), m >= 2, nonzero.
        theta: angle(s) in [0, pi]: a scalar or shape (T,). A single u with T angles gives T vectors around
            the same u; T vectors u with T angles pair them row by row.
        generator: torch generator (drawn on its device, CPU without one; the result is moved to u's device).

    Returns:
        Tensor (m,) when both u and theta are single, else (T, m); u's dtype and device.
    """
    u = as_float_tensor(u, "u")
    if u.ndim not in (1, 2) or u.shape[-1] < 2:
        raise ValueError(f"u must have shape (m,) or (T, m) with m >= 2, got {tuple(u.shape)}")
    single_u = u.ndim == 1
    u2 = u.unsqueeze(0) if single_u else u  # (Tu, m)
    norms = u2.norm(dim=1, keepdim=True)
    if not bool((norms > 0).all()):
        raise ValueError("u must be nonzero")
    u_hat = u2 / norms
    theta_t = torch.as_tensor(theta, dtype=u.dtype)
    if theta_t.ndim > 1:
        raise ValueError(f"theta must be a scalar or a 1-D tensor, got shape {tuple(theta_t.shape)}")
    single_theta = theta_t.ndim == 0
    theta_t = theta_t.reshape(-1).to(u.device)
    if not bool(theta_t.isfinite().all()) or bool(((theta_t < 0) | (theta_t > math.pi)).any()):
        raise ValueError("theta must lie in [0, pi]")
    count = max(u_hat.shape[0], theta_t.shape[0])
    if u_hat.shape[0] not in (1, count) or theta_t.shape[0] not in (1, count):
        raise ValueError(f"u ({u_hat.shape[0]} rows) and theta ({theta_t.shape[0]} angles) do not match")
    u_hat = u_hat.expand(count, -1)
    theta_t = theta_t.expand(count)
    dev = generator.device if generator is not None else torch.device("cpu")
    w = torch.randn(count, u.shape[-1], generator=generator, device=dev, dtype=u.dtype).to(u.device)
    w = w - (w * u_hat).sum(dim=1, keepdim=True) * u_hat  # remove the component along u
    w = w / w.norm(dim=1, keepdim=True)
    v = torch.cos(theta_t).unsqueeze(1) * u_hat + torch.sin(theta_t).unsqueeze(1) * w  # (T, m)
    return v[0] if single_u and single_theta else v
