"""Position encodings (shared by the enlargement chapter and, later, the position-encoding part of the book).

Rotary position embedding (RoPE) in the *interleaved* convention of Su Jianlin's articles: the last dimension of a
query/key vector ``x`` (even size ``d``) is split into consecutive pairs ``(x[0], x[1]), (x[2], x[3]), ...``, and
pair ``i`` (``0 <= i < d/2``) at position ``m`` is rotated by the angle ``m * inv_freq[i]``::

    out[2i]   = x[2i] * cos(m theta_i) - x[2i+1] * sin(m theta_i)
    out[2i+1] = x[2i] * sin(m theta_i) + x[2i+1] * cos(m theta_i)

with the default frequencies ``theta_i = base ** (-2i / d)``. Because every pair is rotated by an orthogonal 2x2
matrix ``R(m theta_i)`` and ``R(a)^T R(b) = R(b - a)``, inner products only depend on the offset:
``<R_m q, R_n k> = <q, R_{n-m} k>``.

Other libraries (Hugging Face's ``rotate_half``/``apply_rotary_pos_emb``) pair ``x[i]`` with ``x[i + d/2]``; this
"half" layout is the interleaved one up to a fixed permutation of the coordinates. Only ``layout="interleaved"``
is implemented here; the ``layout`` argument is the extension point for the other one.
"""
from __future__ import annotations

from typing import Any

import torch

from ._validation import as_float_tensor, positive_int

__all__ = ["rope_inv_freq", "apply_rope", "ROPE_LAYOUTS"]

ROPE_LAYOUTS = ("interleaved",)


def rope_inv_freq(dim: int, base: float = 10000.0, *, dtype: torch.dtype | None = None,
                  device: torch.device | str | None = None) -> torch.Tensor:
    """The RoPE frequencies ``theta_i = base ** (-2 i / dim)`` for ``i = 0, ..., dim/2 - 1``.

    Args:
        dim: the (even, positive) size of the rotated vectors (the head size).
        base: the frequency base (> 1; 10^4 in RoFormer).
        dtype: a floating dtype (default: ``torch.get_default_dtype()``); computed in float64, then cast.
        device: where the result lives (default: CPU).

    Returns:
        A 1-D tensor of shape ``(dim // 2,)``, decreasing from 1.
    """
    dim = positive_int(dim, "dim", minimum=2)
    if dim % 2:
        raise ValueError(f"dim must be even (RoPE rotates pairs), got {dim}")
    try:
        base = float(base)
    except (TypeError, ValueError):
        raise ValueError(f"base must be a number > 1, got {base!r}") from None
    if not base > 1.0 or base == float("inf"):
        raise ValueError(f"base must be a finite number > 1, got {base}")
    dtype = dtype or torch.get_default_dtype()
    if not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating dtype, got {dtype}")
    exponents = torch.arange(0, dim, 2, dtype=torch.float64, device=device) / dim  # 2i / dim
    return (base ** -exponents).to(dtype)


def apply_rope(x: Any, positions: Any, inv_freq: Any = None, *, layout: str = "interleaved") -> torch.Tensor:
    """Rotate ``x`` by RoPE at ``positions`` (interleaved pairs, see the module docstring).

    Args:
        x: tensor of shape ``(..., d)`` with ``d`` even (any leading batch/head/position dimensions); numpy arrays
            are accepted. Its dtype and device are kept.
        positions: the position of each vector, broadcastable to ``x.shape[:-1]`` (e.g. shape ``(T,)`` for ``x`` of
            shape ``(B, H, T, d)``); integers or floats.
        inv_freq: 1-D frequencies of shape ``(d // 2,)``, one per pair (default: ``rope_inv_freq(d)``). Passing
            them explicitly allows non-standard schedules (e.g. each frequency used twice).
        layout: ``"interleaved"`` (pairs ``(x[2i], x[2i+1])``); other layouts raise ``ValueError`` for now.

    Returns:
        Tensor of shape ``broadcast(x.shape[:-1], positions.shape) + (d,)`` (normally ``x.shape``), dtype and
        device of ``x``. Angles are formed in float64 when ``x`` is float64, else in ``x``'s dtype.
    """
    if layout not in ROPE_LAYOUTS:
        raise ValueError(f"layout must be one of {ROPE_LAYOUTS}, got {layout!r}")
    x = as_float_tensor(x, "x", min_ndim=1)
    dim = x.shape[-1]
    if dim == 0 or dim % 2:
        raise ValueError(f"the last dimension of x must be even and positive (RoPE rotates pairs), got {dim}")
    if inv_freq is None:
        inv_freq = rope_inv_freq(dim, dtype=x.dtype, device=x.device)
    inv_freq = as_float_tensor(inv_freq, "inv_freq", ndim=1).to(dtype=x.dtype, device=x.device)
    if inv_freq.shape[0] != dim // 2:
        raise ValueError(f"inv_freq must have d // 2 = {dim // 2} entries, got {inv_freq.shape[0]}")
    if isinstance(positions, (int, float)) and not isinstance(positions, bool):
        positions = torch.tensor(positions)
    positions = as_float_tensor(positions, "positions").to(dtype=x.dtype, device=x.device)
    try:
        torch.broadcast_shapes(positions.shape, x.shape[:-1])
    except RuntimeError:
        raise ValueError(f"positions of shape {tuple(positions.shape)} do not broadcast to x.shape[:-1] = "
                         f"{tuple(x.shape[:-1])}") from None
    angles = positions[..., None] * inv_freq                     # (..., d/2)
    cos, sin = torch.cos(angles), torch.sin(angles)
    even, odd = x[..., 0::2], x[..., 1::2]                        # (..., d/2) each: the pairs (x[2i], x[2i+1])
    rotated = torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1)  # (..., d/2, 2)
    return rotated.flatten(-2)                                    # (..., d), pairs back in place
