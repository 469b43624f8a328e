"""Position encodings: sinusoidal tables, rotary position embedding (RoPE) in 1-D and 2-D, relative-position helpers.

RoPE (Su Jianlin, kexue.fm/archives/8265). A query/key vector ``x`` of even size ``d`` is cut into ``d/2`` pairs and
pair ``i`` at position ``m`` is rotated by the angle ``m * theta_i`` with ``theta_i = base ** (-2i / d)``. Two
*layouts* say which coordinates form pair ``i``:

* ``"interleaved"`` (the article, RoFormer, GPT-J, Meta's original LLaMA code, ``rotary-embedding-torch``): pair ``i``
  is ``(x[2i], x[2i+1])``::

      out[2i]   = x[2i] * cos(m theta_i) - x[2i+1] * sin(m theta_i)
      out[2i+1] = x[2i] * sin(m theta_i) + x[2i+1] * cos(m theta_i)

* ``"half"`` (Hugging Face transformers' Llama ``rotate_half``, GPT-NeoX): pair ``i`` is ``(x[i], x[i + d/2])``, same
  formulas with ``2i -> i`` and ``2i+1 -> i + d/2``.

They are the same map up to the fixed permutation ``perm = interleaved_to_half_perm(d) = cat(arange(0, d, 2),
arange(1, d, 2))``: ``apply_rope(x[..., perm], p, layout="half") == apply_rope(x, p)[..., perm]``. Because every pair
is rotated by an orthogonal ``2x2`` matrix ``rho(a)`` and ``rho(a)^T rho(b) = rho(b - a)``, inner products depend
only on the offset: ``<R_m q, R_n k> = <q, R_{n-m} k>``.

Kernels: angles are always formed in float64 (``m theta_i`` for ``m = 10^5`` has a float32 ulp of ~0.008 rad), then
cos/sin are cast to the dtype of ``x``. For float32/float64 inputs the interleaved rotation is one complex multiply
(``view_as_complex``), the fastest form on CPU; half-precision inputs and the half layout use fused
``mul``/``addcmul`` into a preallocated output. cos/sin tables for positions ``0..n-1`` are cached
(:func:`rope_cos_sin`, keyed by ``(n, d, base, dtype, device)``). Everything follows the input's device (CUDA
included) and accepts any leading batch/head dimensions.

Also here: sinusoidal (Vaswani) tables and their shift matrices/Gram function, 2-D (axial) RoPE, the RoPE decay
proxy of article 8265, T5 relative buckets, clipped relative indices, Toeplitz matrices from offsets, ALiBi biases.
"""
from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np
import torch

from ._validation import as_float_tensor, positive_int

__all__ = [
    "ROPE_LAYOUTS", "SINUSOIDAL_LAYOUTS", "rope_inv_freq", "rope_frequencies", "interleaved_to_half_perm",
    "rope_cos_sin", "apply_rope", "rope_matrix", "rope_scores", "rope_decay_curve", "apply_rope_2d",
    "axial_positions", "rope_2d_matrix", "sinusoidal_pe", "sinusoidal_shift_matrix", "sinusoidal_gram",
    "t5_relative_position_bucket", "relative_index", "toeplitz_from_offsets", "alibi_bias",
    "skew_generator", "rope_from_generator", "quaternion_mul", "quaternion_exp", "quaternion_left_matrix",
]

ROPE_LAYOUTS = ("interleaved", "half")
SINUSOIDAL_LAYOUTS = ("sin_cos_interleaved", "cos_sin_interleaved", "sin_then_cos", "half")


# ----------------------------------------------------------------------------------------------------------------
# validation helpers
# ----------------------------------------------------------------------------------------------------------------
def _base(base: Any) -> float:
    try:
        value = float(base)
    except (TypeError, ValueError):
        raise ValueError(f"base must be a number > 1, got {base!r}") from None
    if not value > 1.0 or value == float("inf"):
        raise ValueError(f"base must be a finite number > 1, got {value}")
    return value


def _even_dim(dim: Any, name: str = "dim", multiple: int = 2) -> int:
    dim = positive_int(dim, name, minimum=multiple)
    if dim % multiple:
        what = "even (RoPE rotates pairs)" if multiple == 2 else f"divisible by {multiple}"
        raise ValueError(f"{name} must be {what}, got {dim}")
    return dim


def _layout(layout: str, allowed: tuple[str, ...]) -> str:
    if layout not in allowed:
        raise ValueError(f"layout must be one of {allowed}, got {layout!r}")
    return layout


def _positions(positions: Any, device: torch.device | str | None = None) -> torch.Tensor:
    """Positions as a float64 tensor (python numbers, numpy arrays and integer tensors accepted)."""
    if isinstance(positions, (int, float, np.integer, np.floating)) and not isinstance(positions, bool):
        positions = torch.tensor(float(positions), dtype=torch.float64)
    elif isinstance(positions, (list, tuple)):
        positions = torch.tensor(positions, dtype=torch.float64)
    positions = as_float_tensor(positions, "positions")
    if not torch.isfinite(positions).all():
        raise ValueError("positions must be finite")
    return positions.to(dtype=torch.float64, device=device)


# ----------------------------------------------------------------------------------------------------------------
# frequencies, permutation, cached tables
# ----------------------------------------------------------------------------------------------------------------
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
    dim = _even_dim(dim)
    base = _base(base)
    dtype = dtype or torch.get_default_dtype()
    if not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating dtype, got {dtype}")
    exponents = torch.arange(0, dim, 2, dtype=torch.float64, device=device) / dim  # 2i / dim
    return (base ** -exponents).to(dtype)


def rope_frequencies(d: int, base: float = 10000.0, dtype: torch.dtype = torch.float64,
                     device: torch.device | str | None = None) -> torch.Tensor:
    """``theta_i = base ** (-2i/d)``, shape ``(d/2,)``; like :func:`rope_inv_freq` but float64 by default."""
    return rope_inv_freq(d, base, dtype=dtype, device=device)


def interleaved_to_half_perm(d: int) -> torch.Tensor:
    """The permutation ``cat(arange(0, d, 2), arange(1, d, 2))`` (LongTensor ``(d,)``).

    ``y = x[..., perm]`` moves interleaved pair ``(x[2i], x[2i+1])`` to positions ``(i, i + d/2)`` of ``y``, so
    ``apply_rope(x[..., perm], p, layout="half") == apply_rope(x, p, layout="interleaved")[..., perm]``; the inverse
    permutation is ``torch.argsort(perm)``.
    """
    d = _even_dim(d, "d")
    return torch.cat([torch.arange(0, d, 2), torch.arange(1, d, 2)])


@functools.lru_cache(maxsize=64)
def _cached_table(n: int, d: int, base: float, dtype: torch.dtype, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    angles = torch.arange(n, dtype=torch.float64, device=device)[:, None] * rope_inv_freq(
        d, base, dtype=torch.float64, device=device)                           # (n, d/2), float64
    return torch.cos(angles).to(dtype), torch.sin(angles).to(dtype)


def rope_cos_sin(n: int, d: int, base: float = 10000.0, *, dtype: torch.dtype = torch.float32,
                 device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Cached ``cos(m theta_i), sin(m theta_i)`` for positions ``m = 0..n-1``: two tensors of shape ``(n, d/2)``.

    Angles are formed in float64 and the result is cast to ``dtype``. The cache is keyed by
    ``(n, d, base, dtype, device)`` (an LRU of 64 entries); the returned tensors are shared, do not modify them.
    Call ``rope_cos_sin.cache_clear()`` to empty it.
    """
    n = positive_int(n, "n")
    d = _even_dim(d, "d")
    base = _base(base)
    if not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating dtype, got {dtype}")
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    return _cached_table(n, d, base, dtype, str(dev))


rope_cos_sin.cache_clear = _cached_table.cache_clear  # type: ignore[attr-defined]


# ----------------------------------------------------------------------------------------------------------------
# RoPE
# ----------------------------------------------------------------------------------------------------------------
def _rotate_pairs(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, layout: str) -> torch.Tensor:
    """Rotate the pairs of ``x`` (..., d) by angles with ``cos``/``sin`` (broadcastable to (..., d/2)).

    Differentiable: inputs that require grad take an out-of-place path (``out=`` kernels do not record autograd)."""
    half = x.shape[-1] // 2
    shape = torch.broadcast_shapes(x.shape[:-1], cos.shape[:-1])
    if layout == "interleaved" and x.dtype in (torch.float32, torch.float64):
        # One complex multiply: (x0 + i x1)(cos + i sin) = (x0 cos - x1 sin) + i (x0 sin + x1 cos).
        xc = torch.view_as_complex(x.reshape(*x.shape[:-1], half, 2))       # (..., d/2) complex
        rotation = torch.complex(cos, sin)                                  # (..., d/2) complex
        return torch.view_as_real(xc * rotation).reshape(*shape, 2 * half)
    if torch.is_grad_enabled() and x.requires_grad:
        # autograd does not support out=...: the same formula out of place
        if layout == "interleaved":
            first, second = x[..., 0::2], x[..., 1::2]
            return torch.stack((first * cos - second * sin, first * sin + second * cos), dim=-1).flatten(-2)
        first, second = x[..., :half], x[..., half:]
        return torch.cat((first * cos - second * sin, second * cos + first * sin), dim=-1)
    out = x.new_empty(*shape, 2 * half)
    if layout == "interleaved":
        xv, ov = x.unflatten(-1, (half, 2)), out.unflatten(-1, (half, 2))   # (..., d/2, 2)
        first, second, out_first, out_second = xv[..., 0], xv[..., 1], ov[..., 0], ov[..., 1]
    else:  # half: pair i = (x[i], x[i + d/2])
        first, second, out_first, out_second = x[..., :half], x[..., half:], out[..., :half], out[..., half:]
    torch.mul(first, cos, out=out_first)
    out_first.addcmul_(second, sin, value=-1)           # first cos - second sin
    torch.mul(second, cos, out=out_second)
    out_second.addcmul_(first, sin)                      # first sin + second cos
    return out


def apply_rope(x: Any, positions: Any = None, inv_freq: Any = None, *, layout: str = "interleaved",
               base: float = 10000.0) -> torch.Tensor:
    """Rotate ``x`` by RoPE at ``positions`` (see the module docstring for the two layouts).

    Args:
        x: tensor of shape ``(..., d)`` with ``d`` even (any leading batch/head/position dimensions); numpy arrays
            are accepted; any floating dtype (float16/bfloat16/float32/float64). Its dtype and device are kept.
        positions: the position of each vector, broadcastable to ``x.shape[:-1]`` (e.g. shape ``(T,)`` for ``x`` of
            shape ``(B, H, T, d)``); integers or floats, tensor/array/number. ``None`` means ``0..T-1`` along
            ``x``'s second-to-last dimension and uses the cached cos/sin table (:func:`rope_cos_sin`).
        inv_freq: 1-D frequencies of shape ``(d // 2,)``, one per pair (default: ``base ** (-2i/d)``). Passing
            them explicitly allows non-standard schedules.
        layout: ``"interleaved"`` (pairs ``(x[2i], x[2i+1])``, the article) or ``"half"`` (pairs ``(x[i], x[i+d/2])``,
            transformers' Llama / GPT-NeoX).
        base: the frequency base used when ``inv_freq`` is None (> 1).

    Returns:
        Tensor of shape ``broadcast(x.shape[:-1], positions.shape) + (d,)`` (normally ``x.shape``), dtype and
        device of ``x``. Angles ``position * theta_i`` are formed in float64, then cos/sin are cast to ``x.dtype``.
    """
    _layout(layout, ROPE_LAYOUTS)
    x = as_float_tensor(x, "x", min_ndim=1)
    dim = x.shape[-1]
    if dim == 0 or dim % 2:
        raise ValueError(f"the last dimension of x must be even and positive (RoPE rotates pairs), got {dim}")
    if positions is None and inv_freq is None:
        if x.ndim < 2:
            raise ValueError("positions=None needs x of shape (..., T, d)")
        cos, sin = rope_cos_sin(x.shape[-2], dim, base, dtype=x.dtype, device=x.device)
        return _rotate_pairs(x, cos, sin, layout)
    if inv_freq is None:
        inv_freq = rope_inv_freq(dim, base, dtype=torch.float64, device=x.device)
    inv_freq = as_float_tensor(inv_freq, "inv_freq", ndim=1).to(dtype=torch.float64, device=x.device)
    if inv_freq.shape[0] != dim // 2:
        raise ValueError(f"inv_freq must have d // 2 = {dim // 2} entries, got {inv_freq.shape[0]}")
    if positions is None:
        if x.ndim < 2:
            raise ValueError("positions=None needs x of shape (..., T, d)")
        positions = torch.arange(x.shape[-2], dtype=torch.float64, device=x.device)
    positions = _positions(positions, x.device)
    try:
        torch.broadcast_shapes(positions.shape, x.shape[:-1])
    except RuntimeError:
        raise ValueError(f"positions of shape {tuple(positions.shape)} do not broadcast to x.shape[:-1] = "
                         f"{tuple(x.shape[:-1])}") from None
    angles = positions[..., None] * inv_freq                                   # (..., d/2) float64
    return _rotate_pairs(x, torch.cos(angles).to(x.dtype), torch.sin(angles).to(x.dtype), layout)


def rope_matrix(m: float, d: int, base: float = 10000.0, *, layout: str = "interleaved",
                inv_freq: Any = None) -> torch.Tensor:
    """The dense ``(d, d)`` float64 RoPE matrix ``R_m`` (``apply_rope(x, m) == R_m @ x``), for tests and figures.

    Interleaved: ``blockdiag(rho(m theta_0), ..., rho(m theta_{d/2-1}))`` with ``rho(a) = [[cos a, -sin a],
    [sin a, cos a]]``; half: the same matrix conjugated by the layout permutation.
    """
    d = _even_dim(d, "d")
    _layout(layout, ROPE_LAYOUTS)
    if inv_freq is None:
        inv_freq = rope_inv_freq(d, base, dtype=torch.float64)
    inv_freq = as_float_tensor(inv_freq, "inv_freq", ndim=1).double()
    if inv_freq.shape[0] != d // 2:
        raise ValueError(f"inv_freq must have d // 2 = {d // 2} entries, got {inv_freq.shape[0]}")
    angles = float(m) * inv_freq
    c, s = torch.cos(angles), torch.sin(angles)
    idx = torch.arange(d // 2)
    first, second = (2 * idx, 2 * idx + 1) if layout == "interleaved" else (idx, idx + d // 2)
    mat = torch.zeros(d, d, dtype=torch.float64)
    mat[first, first], mat[first, second] = c, -s
    mat[second, first], mat[second, second] = s, c
    return mat


def rope_scores(q: Any, k: Any, positions_q: Any, positions_k: Any, base: float = 10000.0, *,
                layout: str = "interleaved", chunk_size: int = 4096) -> torch.Tensor:
    """RoPE attention logits ``(R_{m_a} q_a)^T (R_{n_b} k_b)`` for all query/key pairs.

    Args:
        q: ``(..., n_q, d)``; k: ``(..., n_k, d)`` (leading dims broadcast); d even.
        positions_q: ``(n_q,)`` positions of the queries; positions_k: ``(n_k,)`` of the keys.
        chunk_size: keys per chunk (the rotated keys and the logits of one chunk are formed at a time).

    Returns:
        ``(..., n_q, n_k)`` in the promoted dtype of q and k, on q's device. No ``1/sqrt(d)`` scaling.
    """
    q = as_float_tensor(q, "q", min_ndim=2)
    k = as_float_tensor(k, "k", min_ndim=2)
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"q and k must have the same last dimension, got {q.shape[-1]} and {k.shape[-1]}")
    chunk_size = positive_int(chunk_size, "chunk_size")
    dtype = torch.promote_types(q.dtype, k.dtype)
    q, k = q.to(dtype), k.to(device=q.device, dtype=dtype)
    pq, pk = _positions(positions_q, q.device), _positions(positions_k, q.device)
    if pq.shape != q.shape[-2:-1] or pk.shape != k.shape[-2:-1]:
        raise ValueError(f"positions_q must have shape ({q.shape[-2]},) and positions_k ({k.shape[-2]},), got "
                         f"{tuple(pq.shape)} and {tuple(pk.shape)}")
    rq = apply_rope(q, pq, layout=layout, base=base)
    parts = [rq @ apply_rope(k[..., s:s + chunk_size, :], pk[s:s + chunk_size], layout=layout,
                             base=base).transpose(-1, -2) for s in range(0, k.shape[-2], chunk_size)]
    return torch.cat(parts, dim=-1)


def rope_decay_curve(deltas: Any, d: int, base: float = 10000.0, *, chunk_size: int = 65536) -> torch.Tensor:
    """The long-range-decay proxy of article 8265: ``F(D) = (2/d) sum_{j=1}^{d/2} |S_j(D)|``,
    ``S_j(D) = sum_{i=0}^{j-1} exp(1j * D * theta_i)``, ``theta_i = base ** (-2i/d)``.

    Args:
        deltas: relative offsets (any shape; numbers/arrays/tensors); the device of a tensor input is used.
        d: even head size; base: frequency base.
        chunk_size: offsets per chunk (memory ``chunk_size * d/2`` complex128).

    Returns:
        float64 tensor of ``deltas``'s shape; ``F(0) = (d/2 + 1)/2``.
    """
    d = _even_dim(d, "d")
    chunk_size = positive_int(chunk_size, "chunk_size")
    device = deltas.device if isinstance(deltas, torch.Tensor) else None
    delta = _positions(deltas, device)
    theta = rope_inv_freq(d, base, dtype=torch.float64, device=delta.device)
    flat = delta.reshape(-1)
    out = torch.empty_like(flat)
    for s in range(0, flat.numel(), chunk_size):
        angles = flat[s:s + chunk_size, None] * theta                           # (chunk, d/2)
        partial = torch.cumsum(torch.polar(torch.ones_like(angles), angles), dim=-1)   # S_1..S_{d/2}
        out[s:s + chunk_size] = partial.abs().mean(dim=-1)
    return out.reshape(delta.shape)


# ----------------------------------------------------------------------------------------------------------------
# 2-D RoPE
# ----------------------------------------------------------------------------------------------------------------
def axial_positions(h: int, w: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Row-major grid positions: LongTensor ``(h*w, 2)`` with row ``t`` equal to ``(t // w, t % w)``."""
    h, w = positive_int(h, "h"), positive_int(w, "w")
    rows, cols = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
    return torch.stack([rows.reshape(-1), cols.reshape(-1)], dim=-1)


def apply_rope_2d(x: Any, pos_xy: Any, base: float = 10000.0, layout: str = "interleaved") -> torch.Tensor:
    """2-D (axial) RoPE: the first ``d/2`` channels rotated by the first coordinate, the last ``d/2`` by the second.

    Each half is an ordinary 1-D RoPE of size ``d/2`` (frequencies ``base ** (-2i/(d/2))``) in ``layout``; the total
    rotation ``blockdiag(R_x, R_y)`` satisfies ``R_{p}^T R_{p'} = R_{p' - p}`` for 2-D positions.

    Args:
        x: ``(..., n, d)`` with ``d`` divisible by 4 (any floating dtype; dtype/device kept).
        pos_xy: ``(n, 2)`` positions (integers or floats), e.g. :func:`axial_positions`; also ``(..., n, 2)``
            broadcastable against ``x.shape[:-1]``.
    Returns:
        Tensor of ``x``'s shape.
    """
    x = as_float_tensor(x, "x", min_ndim=1)
    d = x.shape[-1]
    if d == 0 or d % 4:
        raise ValueError(f"the last dimension of x must be a positive multiple of 4 for 2-D RoPE, got {d}")
    pos = _positions(pos_xy, x.device)
    if pos.ndim < 1 or pos.shape[-1] != 2:
        raise ValueError(f"pos_xy must have shape (n, 2), got {tuple(pos.shape)}")
    half = d // 2
    first = apply_rope(x[..., :half], pos[..., 0], layout=layout, base=base)
    second = apply_rope(x[..., half:], pos[..., 1], layout=layout, base=base)
    return torch.cat([first, second], dim=-1)


def rope_2d_matrix(px: float, py: float, d: int, base: float = 10000.0, *,
                   layout: str = "interleaved") -> torch.Tensor:
    """Dense ``(d, d)`` float64 matrix of :func:`apply_rope_2d` at position ``(px, py)``: blockdiag(R_px, R_py)."""
    d = _even_dim(d, "d", multiple=4)
    return torch.block_diag(rope_matrix(px, d // 2, base, layout=layout), rope_matrix(py, d // 2, base, layout=layout))


def skew_generator(params: Any) -> torch.Tensor:
    """Skew-symmetric ``(n, n)`` matrix from its ``n(n-1)/2`` strictly-lower entries, in row-major order.

    3 parameters ``(a, b, c)`` give ``[[0, -a, -b], [a, 0, -c], [b, c, 0]]``; 6 parameters ``(a, b, c, d, e, f)`` give
    ``[[0, -a, -b, -d], [a, 0, -c, -e], [b, c, 0, -f], [d, e, f, 0]]`` (the parametrisation of article 8397).
    float64 unless ``params`` is a floating tensor (then its dtype/device); a leading batch shape is allowed.
    """
    if isinstance(params, (list, tuple)):
        params = torch.tensor([float(p) for p in params], dtype=torch.float64)
    params = as_float_tensor(params, "params", min_ndim=1)
    count = params.shape[-1]
    size = int(round((1 + math.sqrt(1 + 8 * count)) / 2))
    if size * (size - 1) // 2 != count or size < 2:
        raise ValueError(f"params must hold n(n-1)/2 entries for some n >= 2 (1, 3, 6, 10, ...), got {count}")
    rows, cols = torch.tril_indices(size, size, offset=-1)       # row-major strictly-lower positions
    out = params.new_zeros(*params.shape[:-1], size, size)
    out[..., rows, cols] = params
    out[..., cols, rows] = -params
    return out


def rope_from_generator(generator: Any, n: Any) -> torch.Tensor:
    """``R_n = exp(n B)`` by ``torch.linalg.matrix_exp`` for a square generator ``B`` (``(..., k, k)``) and a position
    ``n`` (number or tensor broadcasting against the leading dims). Relative (``R_m^T R_n = R_{n-m}``) iff B is skew."""
    generator = as_float_tensor(generator, "generator", min_ndim=2)
    if generator.shape[-1] != generator.shape[-2]:
        raise ValueError(f"generator must be square, got shape {tuple(generator.shape)}")
    pos = _positions(n, generator.device).to(generator.dtype)
    return torch.linalg.matrix_exp(pos[..., None, None] * generator)


def _quat(x: Any, name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim < 1 or arr.shape[-1] != 4:
        raise ValueError(f"{name} must have a last dimension of size 4 (a + bi + cj + dk), got shape {arr.shape}")
    return arr


def quaternion_mul(p: Any, q: Any) -> np.ndarray:
    """Hamilton product ``p q`` of quaternions stored as ``(..., 4)`` arrays ``(a, b, c, d)`` = a + bi + cj + dk
    (``ij = k, jk = i, ki = j``, non-commutative). numpy float64, broadcasting."""
    p, q = _quat(p, "p"), _quat(q, "q")
    a1, b1, c1, d1 = np.moveaxis(p, -1, 0)
    a2, b2, c2, d2 = np.moveaxis(q, -1, 0)
    return np.stack([a1 * a2 - b1 * b2 - c1 * c2 - d1 * d2,
                     a1 * b2 + b1 * a2 + c1 * d2 - d1 * c2,
                     a1 * c2 - b1 * d2 + c1 * a2 + d1 * b2,
                     a1 * d2 + b1 * c2 - c1 * b2 + d1 * a2], axis=-1)


def quaternion_exp(v: Any) -> np.ndarray:
    """``exp(a + bi + cj + dk) = e^a (cos r + (bi + cj + dk) sin(r) / r)``, ``r = sqrt(b^2 + c^2 + d^2)``
    (``(..., 4)`` numpy float64; ``sin(r)/r -> 1`` at ``r = 0``)."""
    v = _quat(v, "v")
    r = np.linalg.norm(v[..., 1:], axis=-1)
    sinc = np.sinc(r / np.pi)                                    # sin(r)/r, = 1 at r = 0
    return np.exp(v[..., :1]) * np.concatenate([np.cos(r)[..., None], v[..., 1:] * sinc[..., None]], axis=-1)


def quaternion_left_matrix(p: Any) -> np.ndarray:
    """``L(p)`` with ``L(p) @ q = p q`` (LEFT multiplication): ``[[a, -b, -c, -d], [b, a, -d, c], [c, d, a, -b],
    [d, -c, b, a]]`` for ``p = (a, b, c, d)``; ``(..., 4, 4)`` numpy float64. It is the 4x4 matrix of article 8397."""
    a, b, c, d = np.moveaxis(_quat(p, "p"), -1, 0)
    return np.stack([np.stack([a, -b, -c, -d], -1), np.stack([b, a, -d, c], -1),
                     np.stack([c, d, a, -b], -1), np.stack([d, -c, b, a], -1)], axis=-2)


# ----------------------------------------------------------------------------------------------------------------
# Sinusoidal (Vaswani et al.) encodings
# ----------------------------------------------------------------------------------------------------------------
def sinusoidal_pe(positions: Any, d: int, base: float = 10000.0, layout: str = "sin_cos_interleaved", *,
                  dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Sinusoidal position encodings ``p_k`` with ``theta_i = base ** (-2i/d)``.

    Layouts: ``"sin_cos_interleaved"`` (Vaswani / the article: ``p[2i] = sin(k theta_i)``,
    ``p[2i+1] = cos(k theta_i)``),
    ``"cos_sin_interleaved"`` (``p[2i] = cos``, ``p[2i+1] = sin``: the form met in the RoPE derivation) and
    ``"sin_then_cos"`` (alias ``"half"``: all sines, then all cosines).

    Args:
        positions: any shape (numbers/arrays/tensors; integers or floats).
        d: even dimension.
    Returns:
        ``positions.shape + (d,)`` in ``dtype`` (float64 by default), on the positions' device. Angles in float64.
    """
    d = _even_dim(d, "d")
    _layout(layout, SINUSOIDAL_LAYOUTS)
    device = positions.device if isinstance(positions, torch.Tensor) else None
    pos = _positions(positions, device)
    angles = pos[..., None] * rope_inv_freq(d, base, dtype=torch.float64, device=pos.device)   # (..., d/2)
    s, c = torch.sin(angles), torch.cos(angles)
    if layout == "sin_cos_interleaved":
        out = torch.stack([s, c], dim=-1).flatten(-2)
    elif layout == "cos_sin_interleaved":
        out = torch.stack([c, s], dim=-1).flatten(-2)
    else:
        out = torch.cat([s, c], dim=-1)
    return out.to(dtype)


def sinusoidal_shift_matrix(beta: float, d: int, base: float = 10000.0, *,
                            layout: str = "sin_cos_interleaved") -> torch.Tensor:
    """The ``(d, d)`` float64 matrix ``M_beta`` with ``sinusoidal_pe(k + beta) = M_beta @ sinusoidal_pe(k)`` for all k.

    For the interleaved (sin, cos) layout it is block-diagonal with blocks
    ``[[cos b_i, sin b_i], [-sin b_i, cos b_i]]``,
    ``b_i = beta theta_i`` (from sin(a+b) = sin a cos b + cos a sin b, cos(a+b) = cos a cos b - sin a sin b).
    """
    d = _even_dim(d, "d")
    _layout(layout, SINUSOIDAL_LAYOUTS)
    b = float(beta) * rope_inv_freq(d, base, dtype=torch.float64)
    c, s = torch.cos(b), torch.sin(b)
    idx = torch.arange(d // 2)
    if layout in ("sin_cos_interleaved", "cos_sin_interleaved"):
        first, second = 2 * idx, 2 * idx + 1
    else:
        first, second = idx, idx + d // 2
    if layout == "cos_sin_interleaved":
        first, second = second, first          # (sin, cos) coordinates of pair i
    mat = torch.zeros(d, d, dtype=torch.float64)
    mat[first, first], mat[first, second] = c, s        # new sin = sin cos b + cos sin b
    mat[second, first], mat[second, second] = -s, c     # new cos = -sin sin b + cos cos b
    return mat


def sinusoidal_gram(delta: Any, d: int, base: float = 10000.0, *, chunk_size: int = 65536) -> torch.Tensor:
    """``<p_k, p_{k+delta}> = sum_{i<d/2} cos(delta theta_i)`` (independent of k, any layout), float64, delta's shape.

    Chunked over offsets (memory ``chunk_size * d/2``); the device of a tensor input is used.
    """
    d = _even_dim(d, "d")
    chunk_size = positive_int(chunk_size, "chunk_size")
    device = delta.device if isinstance(delta, torch.Tensor) else None
    dl = _positions(delta, device)
    theta = rope_inv_freq(d, base, dtype=torch.float64, device=dl.device)
    flat = dl.reshape(-1)
    out = torch.empty_like(flat)
    for s in range(0, flat.numel(), chunk_size):
        out[s:s + chunk_size] = torch.cos(flat[s:s + chunk_size, None] * theta).sum(dim=-1)
    return out.reshape(dl.shape)


# ----------------------------------------------------------------------------------------------------------------
# Relative-position helpers
# ----------------------------------------------------------------------------------------------------------------
def t5_relative_position_bucket(rel: Any, bidirectional: bool = True, num_buckets: int = 32,
                                max_distance: int = 128) -> torch.Tensor:
    """T5's relative-position buckets (Raffel et al.; same convention as transformers' ``T5Attention``).

    ``rel = j - i`` (key position minus query position). Bidirectional: half of the buckets per direction, keys to
    the right (``rel > 0``) get ``num_buckets/2 +`` the bucket of ``|rel|``. Within a direction with ``nb`` buckets,
    ``|rel| < nb/2`` is its own bucket, larger offsets get ``nb/2 + floor(log(|rel|/(nb/2)) / log(max_distance/(nb/2))
    * (nb/2))`` capped at ``nb - 1``. Computed with exact integer thresholds (no float log rounding):
    bucket ``>= e + k``
    iff ``|rel| >= (e) * (max_distance/e) ** (k/e)`` with ``e = nb/2``.

    Returns:
        LongTensor of ``rel``'s shape.
    """
    num_buckets = positive_int(num_buckets, "num_buckets", minimum=2)
    max_distance = positive_int(max_distance, "max_distance", minimum=1)
    if isinstance(rel, np.ndarray):
        rel = torch.from_numpy(rel)
    elif not isinstance(rel, torch.Tensor):
        rel = torch.as_tensor(rel)
    if rel.is_floating_point() or rel.is_complex() or rel.dtype == torch.bool:
        if rel.is_floating_point() and torch.equal(rel, rel.round()):
            rel = rel.long()
        else:
            raise ValueError(f"rel must hold integers, got dtype {rel.dtype}")
    rel = rel.long()
    buckets = torch.zeros_like(rel)
    nb = num_buckets
    if bidirectional:
        if nb % 2:
            raise ValueError(f"num_buckets must be even when bidirectional, got {nb}")
        nb //= 2
        buckets = buckets + (rel > 0).long() * nb
        dist = rel.abs()
    else:
        dist = (-rel).clamp(min=0)
    exact = nb // 2
    if exact < 1 or max_distance <= exact:
        raise ValueError(f"need max_distance > num_buckets/(2 or 4) = {exact}, got {max_distance}")
    large = torch.full_like(dist, exact)
    span = nb - exact                                   # number of logarithmic buckets
    for k in range(1, span):
        # bucket >= exact + k  <=>  log(D/exact)/log(max_distance/exact) * span >= k
        #                      <=>  D**span * exact**k >= max_distance**k * exact**span  (exact integer arithmetic)
        start = max(exact, int(exact * (max_distance / exact) ** (k / span)) - 1)
        while start ** span * exact ** k < max_distance ** k * exact ** span:
            start += 1
        large = large + (dist >= start).long()
    return buckets + torch.where(dist < exact, dist, large)


def relative_index(n: int, p_min: int, p_max: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Clipped Toeplitz index ``(n, n)``: entry ``[i, j] = clip(i - j, p_min, p_max) - p_min`` (in ``0..p_max-p_min``).

    Use it to gather a table of ``p_max - p_min + 1`` relative embeddings/biases (Shaw et al.): ``g[relative_index]``.
    """
    n = positive_int(n, "n")
    if int(p_min) != p_min or int(p_max) != p_max or p_min > p_max:
        raise ValueError(f"need integers p_min <= p_max, got {p_min}, {p_max}")
    idx = torch.arange(n, device=device)
    return (idx[:, None] - idx[None, :]).clamp(int(p_min), int(p_max)) - int(p_min)


def toeplitz_from_offsets(g: Any, n: int, p_min: int, p_max: int) -> torch.Tensor:
    """``(n, n)`` Toeplitz matrix ``c[i, j] = g[clip(i - j, p_min, p_max) - p_min]`` from ``p_max - p_min + 1`` offsets.

    ``g``: 1-D ``(p_max - p_min + 1,)`` or ``(..., p_max - p_min + 1)`` (leading dims kept: ``(..., n, n)``).
    """
    g = as_float_tensor(g, "g", min_ndim=1)
    if int(p_min) != p_min or int(p_max) != p_max or p_min > p_max:
        raise ValueError(f"need integers p_min <= p_max, got {p_min}, {p_max}")
    if g.shape[-1] != p_max - p_min + 1:
        raise ValueError(f"g must have p_max - p_min + 1 = {p_max - p_min + 1} entries, got {g.shape[-1]}")
    return g[..., relative_index(n, p_min, p_max, device=g.device)]


def alibi_bias(n: int, slope: Any) -> torch.Tensor:
    """ALiBi bias ``-slope * |i - j|``: ``(n, n)`` for a scalar slope, ``(h, n, n)`` for slopes of shape ``(h,)``.

    float64 unless ``slope`` is a floating tensor (then its dtype/device).
    """
    n = positive_int(n, "n")
    if isinstance(slope, (int, float)) and not isinstance(slope, bool):
        slope = torch.tensor(float(slope), dtype=torch.float64)
    slope = as_float_tensor(slope, "slope")
    if slope.ndim > 1:
        raise ValueError(f"slope must be a number or a 1-D tensor of per-head slopes, got shape {tuple(slope.shape)}")
    idx = torch.arange(n, device=slope.device, dtype=slope.dtype)
    dist = (idx[:, None] - idx[None, :]).abs()
    return -slope[..., None, None] * dist
