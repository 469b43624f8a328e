"""Randomised low-rank linear algebra (Halko, Martinsson & Tropp 2011) in torch; CUDA when the input is there.

A randomised SVD is a random projection followed by a small exact SVD: Y = M Omega with a Gaussian test matrix
Omega (q, k + s), Q = orth(Y), B = Q^T M (small), B = U_B S V^T, U = Q U_B. Power iterations
Y <- M (M^T Y) sharpen a slowly decaying spectrum; the basis is re-orthonormalised (QR) before every
multiplication so that rounding does not wash out the small singular directions.
"""
from __future__ import annotations

from typing import Any

import torch

from ._validation import as_float_tensor, positive_int

__all__ = ["random_orthonormal", "matrix_with_spectrum", "randomized_range_finder", "randomized_svd"]


def _nonneg_int(value: Any, name: str) -> int:
    return positive_int(value, name, minimum=0)


def _gaussian(rows: int, cols: int, generator: torch.Generator | None, like: torch.Tensor) -> torch.Tensor:
    """Standard Gaussian (rows, cols), drawn on the generator's device (CPU without one), moved to ``like``."""
    dev = generator.device if generator is not None else torch.device("cpu")
    return torch.randn(rows, cols, generator=generator, device=dev, dtype=like.dtype).to(like.device)


def random_orthonormal(rows: int, cols: int, *, generator: torch.Generator | None = None,
                       dtype: torch.dtype = torch.float64, device: torch.device | str | None = None) -> torch.Tensor:
    """A (rows, cols) matrix with orthonormal columns (rows >= cols): the Q factor of a Gaussian matrix, with the
    signs fixed (diag R > 0) so that it is Haar distributed. Drawn on the generator's device, moved to ``device``."""
    rows = positive_int(rows, "rows")
    cols = positive_int(cols, "cols")
    if cols > rows:
        raise ValueError(f"cols ({cols}) must not exceed rows ({rows}) for orthonormal columns")
    if not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating dtype, got {dtype}")
    dev = generator.device if generator is not None else torch.device("cpu")
    g = torch.randn(rows, cols, generator=generator, device=dev, dtype=dtype)
    q, r = torch.linalg.qr(g)
    q = q * torch.sign(torch.diagonal(r)).unsqueeze(0)
    return q.to(device) if device is not None else q


def matrix_with_spectrum(p: int, q: int, singular_values: Any, *, generator: torch.Generator | None = None,
                         dtype: torch.dtype = torch.float64, return_factors: bool = False
                         ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """M = U diag(sigma) V^T with Haar-random orthonormal U (p, r), V (q, r), r = len(sigma) <= min(p, q).

    U is drawn before V from the same generator. Returns the (p, q) tensor on the generator's device (CPU without
    one), or ``(M, U, V)`` when ``return_factors`` is true (useful for exact error norms of huge M: for any Q with
    orthonormal columns, ||M - Q Q^T M||_2 = ||(U - Q Q^T U) diag(sigma)||_2, an r-column problem).
    """
    p = positive_int(p, "p")
    q = positive_int(q, "q")
    sigma = as_float_tensor(singular_values, "singular_values", ndim=1)
    rank = sigma.shape[0]
    if rank == 0 or rank > min(p, q):
        raise ValueError(f"need 1 <= len(singular_values) <= min(p, q) = {min(p, q)}, got {rank}")
    if bool((sigma < 0).any()) or not bool(sigma.isfinite().all()):
        raise ValueError("singular values must be finite and non-negative")
    left = random_orthonormal(p, rank, generator=generator, dtype=dtype)
    right = random_orthonormal(q, rank, generator=generator, dtype=dtype)
    sigma = sigma.to(device=left.device, dtype=dtype)
    M = (left * sigma) @ right.T
    return (M, left, right) if return_factors else M


def randomized_range_finder(M: Any, size: int, n_iter: int = 0, *, generator: torch.Generator | None = None,
                            test_matrix: Any | None = None) -> torch.Tensor:
    """An orthonormal basis Q (p, size) approximating the range of M's dominant left singular subspace.

    Args:
        M: (p, q) floating matrix (numpy or torch; integers become float64).
        size: number of basis vectors l = k + oversampling, 1 <= l <= min(p, q).
        n_iter: power iterations; each does Q <- orth(M orth(M^T Q)) (QR before every multiplication).
        generator: torch generator for the Gaussian test matrix Omega (q, l), drawn on the generator's device in M's
            dtype and moved to M's device.
        test_matrix: an explicit Omega of shape (q, size) instead of a random one.

    Returns:
        Q with orthonormal columns, shape (p, size), M's dtype and device.
    """
    M = as_float_tensor(M, "M", ndim=2)
    p, q = M.shape
    size = positive_int(size, "size")
    if size > min(p, q):
        raise ValueError(f"size ({size}) must not exceed min(p, q) = {min(p, q)}")
    n_iter = _nonneg_int(n_iter, "n_iter")
    if test_matrix is None:
        omega = _gaussian(q, size, generator, M)
    else:
        omega = as_float_tensor(test_matrix, "test_matrix", ndim=2).to(device=M.device, dtype=M.dtype)
        if omega.shape != (q, size):
            raise ValueError(f"test_matrix must have shape ({q}, {size}), got {tuple(omega.shape)}")
    basis = torch.linalg.qr(M @ omega).Q  # (p, l)
    for _ in range(n_iter):
        basis = torch.linalg.qr(M.T @ basis).Q  # (q, l)
        basis = torch.linalg.qr(M @ basis).Q  # (p, l)
    return basis


def randomized_svd(M: Any, k: int, oversample: int = 10, n_iter: int = 0, *,
                   generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Approximate top-k SVD M ~ U diag(S) Vh by a random projection plus a small exact SVD.

    Args:
        M: (p, q) floating matrix.
        k: target rank, 1 <= k <= min(p, q).
        oversample: extra test vectors s (the basis has l = min(k + s, min(p, q)) columns).
        n_iter: power iterations (see :func:`randomized_range_finder`).
        generator: torch generator for the Gaussian test matrix.

    Returns:
        U (p, k) with orthonormal columns, S (k,) non-increasing, Vh (k, q) with orthonormal rows; M's dtype and
        device. S are the exact singular values of B = Q^T M, which never exceed the true ones.
    """
    M = as_float_tensor(M, "M", ndim=2)
    k = positive_int(k, "k")
    if k > min(M.shape):
        raise ValueError(f"k ({k}) must not exceed min(p, q) = {min(M.shape)}")
    oversample = _nonneg_int(oversample, "oversample")
    size = min(k + oversample, min(M.shape))
    basis = randomized_range_finder(M, size, n_iter, generator=generator)
    small = basis.T @ M  # (l, q)
    u_small, sing, vh = torch.linalg.svd(small, full_matrices=False)
    return (basis @ u_small)[:, :k], sing[:k], vh[:k]
