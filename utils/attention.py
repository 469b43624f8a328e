"""Attention variants: softmax attention, linear (kernel) attention and Performer's positive random features.

Conventions shared by every kernel here:

* sequences are laid out as ``(..., n, d)``: any number of leading batch/head dimensions, which broadcast between
  the arguments (torch rules);
* numpy arrays are accepted and become tensors; integer input becomes float64; the result has the promoted
  floating dtype of the inputs and lives on the device of the first argument (the others are moved there), so a
  computation runs on CUDA when its input is there;
* bad input (wrong ranks, mismatched lengths or widths, non-positive chunk sizes) raises ``ValueError``.

Linear attention (Katharopoulos et al. 2020; the kexue.fm article 8338) replaces ``exp(q . k)`` by
``phi(q) . phi(k)`` with non-negative features, so that by associativity

    out_i = phi(q_i)^T (sum_j phi(k_j) v_j^T) / phi(q_i)^T (sum_j phi(k_j))

costs O(n m d_v) instead of O(n^2). The causal form (sums over j <= i only) is computed chunk by chunk: the prefix
sums of ``phi(k_j) v_j^T`` and ``phi(k_j)`` over all earlier chunks are carried as a running (m, d_v) state, and the
part inside the current chunk is a masked (chunk x chunk) product. Extra memory is O(m d_v + chunk^2 + chunk m)
per batch element besides the output: an n x n matrix is never formed.
"""
from __future__ import annotations

import math
from typing import Any

import torch

from ._validation import as_float_tensor, finite_float, positive_int

__all__ = ["softmax_attention", "attention_matrix", "linear_attention_matrix", "linear_attention",
           "linear_attention_naive", "performer_features", "gaussian_orthogonal_matrix", "attention_entropy",
           "linear_attention_entropy", "rank_collapse_residual"]


def _common(*tensors: torch.Tensor) -> list[torch.Tensor]:
    """Move every tensor to the first one's device and the promoted floating dtype."""
    dtype = tensors[0].dtype
    for t in tensors[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    dev = tensors[0].device
    return [t.to(device=dev, dtype=dtype) for t in tensors]


def _qkv(q: Any, k: Any, v: Any | None, names: tuple[str, str, str]) -> list[torch.Tensor]:
    q = as_float_tensor(q, names[0], min_ndim=2)
    k = as_float_tensor(k, names[1], min_ndim=2)
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"{names[0]} and {names[1]} must have the same last dimension, "
                         f"got {tuple(q.shape)} and {tuple(k.shape)}")
    out = [q, k]
    if v is not None:
        v = as_float_tensor(v, names[2], min_ndim=2)
        if v.shape[-2] != k.shape[-2]:
            raise ValueError(f"{names[1]} and {names[2]} must have the same length n (dim -2), "
                             f"got {tuple(k.shape)} and {tuple(v.shape)}")
        out.append(v)
    try:
        torch.broadcast_shapes(*[t.shape[:-2] for t in out])
    except RuntimeError:
        raise ValueError("leading (batch/head) dimensions do not broadcast: "
                         + ", ".join(str(tuple(t.shape)) for t in out)) from None
    return _common(*out)


def _check_causal(n_q: int, n_k: int) -> None:
    if n_q != n_k:
        raise ValueError(f"causal attention needs as many queries as keys, got {n_q} and {n_k}")


def attention_matrix(q: Any, k: Any, *, causal: bool = False, scale: float | None = None) -> torch.Tensor:
    """Row-stochastic softmax attention weights ``softmax(scale * q k^T)`` (masked above the diagonal if causal).

    Args:
        q: queries ``(..., n_q, d)``; k: keys ``(..., n_k, d)`` (leading dims broadcast).
        causal: mask keys j > i (needs n_q == n_k).
        scale: logit factor; ``None`` means ``1/sqrt(d)`` (as torch's ``scaled_dot_product_attention``).

    Returns:
        ``(..., n_q, n_k)``, dtype/device of the promoted inputs. Materialises the full matrix: reference use.
    """
    q, k = _qkv(q, k, None, ("q", "k", "v"))
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else finite_float(scale, "scale")
    logits = scale * (q @ k.transpose(-1, -2))
    if causal:
        _check_causal(q.shape[-2], k.shape[-2])
        mask = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool, device=q.device).triu(1)
        logits = logits.masked_fill(mask, -math.inf)
    return torch.softmax(logits, dim=-1)


def softmax_attention(q: Any, k: Any, v: Any, *, causal: bool = False, scale: float | None = None) -> torch.Tensor:
    """Standard (naive, O(n^2) memory) attention ``softmax(scale * q k^T) v``, optionally causal.

    Args:
        q ``(..., n_q, d)``, k ``(..., n_k, d)``, v ``(..., n_k, d_v)``; leading dims broadcast.
        causal: mask keys j > i (needs n_q == n_k). scale: logit factor, ``None`` = ``1/sqrt(d)``.

    Returns:
        ``(..., n_q, d_v)``. Builds the n_q x n_k matrix: this is the reference the linear forms are compared with.
    """
    q, k, v = _qkv(q, k, v, ("q", "k", "v"))
    return attention_matrix(q, k, causal=causal, scale=scale) @ v


def linear_attention_matrix(phi_q: Any, phi_k: Any, *, causal: bool = False) -> torch.Tensor:
    """The n_q x n_k matrix of linear attention: ``a_ij = phi_q_i . phi_k_j / sum_j' phi_q_i . phi_k_j'``.

    With ``causal=True`` the similarities with j > i are zeroed before normalising. Features must be non-negative
    (not checked: it would cost a pass over the data) and each row must have a positive sum.

    Returns:
        ``(..., n_q, n_k)``; O(n^2) memory, for reference, rank and entropy experiments.
    """
    phi_q, phi_k = _qkv(phi_q, phi_k, None, ("phi_q", "phi_k", "v"))
    sim = phi_q @ phi_k.transpose(-1, -2)
    if causal:
        _check_causal(phi_q.shape[-2], phi_k.shape[-2])
        sim = torch.tril(sim)
    return sim / sim.sum(dim=-1, keepdim=True)


def linear_attention_naive(phi_q: Any, phi_k: Any, v: Any, *, causal: bool = False) -> torch.Tensor:
    """Reference O(n^2) linear attention: the explicit (masked) matrix of :func:`linear_attention_matrix` times v."""
    phi_q, phi_k, v = _qkv(phi_q, phi_k, v, ("phi_q", "phi_k", "v"))
    return linear_attention_matrix(phi_q, phi_k, causal=causal) @ v


def _linear_parts(qn: torch.Tensor, kn: torch.Tensor, v: torch.Tensor, qd: torch.Tensor, kd: torch.Tensor,
                  causal: bool, chunk_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Numerator ``(..., n, d_v)`` and denominator ``(..., n)`` of linear attention.

    Numerator features (qn, kn) and denominator features (qd, kd) may differ (RoPE in the numerator only)."""
    if not causal:
        kv = kn.transpose(-1, -2) @ v                           # (..., m, d_v)
        num = qn @ kv                                           # (..., n_q, d_v)
        den = (qd @ kd.sum(dim=-2).unsqueeze(-1)).squeeze(-1)   # (..., n_q)
        return num, den
    n = qn.shape[-2]
    batch = torch.broadcast_shapes(qn.shape[:-2], kn.shape[:-2], v.shape[:-2], qd.shape[:-2], kd.shape[:-2])
    m, m_d, d_v = kn.shape[-1], kd.shape[-1], v.shape[-1]
    state_kv = qn.new_zeros(*batch, m, d_v)   # running sum_{j < chunk start} phi(k_j) v_j^T
    state_k = qn.new_zeros(*batch, m_d)       # running sum_{j < chunk start} phi(k_j)
    num = qn.new_empty(*batch, n, d_v)
    den = qn.new_empty(*batch, n)
    for start in range(0, n, chunk_size):
        stop = min(start + chunk_size, n)
        c = stop - start
        q_c, k_c, v_c = qn[..., start:stop, :], kn[..., start:stop, :], v[..., start:stop, :]
        qd_c, kd_c = qd[..., start:stop, :], kd[..., start:stop, :]
        tri = torch.ones(c, c, dtype=torch.bool, device=qn.device).tril()
        intra = (q_c @ k_c.transpose(-1, -2)).masked_fill(~tri, 0.0)        # (..., c, c), j <= i inside the chunk
        num[..., start:stop, :] = q_c @ state_kv + intra @ v_c
        intra_d = intra if qd is qn and kd is kn else (qd_c @ kd_c.transpose(-1, -2)).masked_fill(~tri, 0.0)
        den[..., start:stop] = (qd_c @ state_k.unsqueeze(-1)).squeeze(-1) + intra_d.sum(dim=-1)
        state_kv = state_kv + k_c.transpose(-1, -2) @ v_c
        state_k = state_k + kd_c.sum(dim=-2)
    return num, den


def linear_attention(phi_q: Any, phi_k: Any, v: Any, causal: bool = False, *, chunk_size: int = 128,
                     eps: float = 0.0, rope_positions: Any = None, rope_in_denominator: bool = False) -> torch.Tensor:
    """Linear attention in O(n) time: ``phi_q_i^T S / phi_q_i^T z`` with ``S = sum_j phi_k_j v_j^T``,
    ``z = sum_j phi_k_j`` (sums over j <= i when ``causal``).

    Args:
        phi_q: query features ``(..., n_q, m)``, non-negative (the feature map is applied by the caller).
        phi_k: key features ``(..., n_k, m)``, non-negative. v: values ``(..., n_k, d_v)``. Leading dims broadcast.
        causal: prefix sums over j <= i (needs n_q == n_k), computed chunk-wise: a running (m, d_v) state carries
            the sums over earlier chunks, and inside a chunk a lower-triangular masked ``chunk x chunk`` product
            adds the rest. Extra memory O(m d_v + chunk^2 + chunk m) per batch element; never n x n.
        chunk_size: rows per chunk of the causal form (any positive int; it need not divide n).
        eps: added to the denominator (0 by default: exact).
        rope_positions: optional positions ``(n,)``; if given, RoPE (``utils.positions.apply_rope``, interleaved
            layout) rotates the query/key features in the numerator (the RoPE-linear-attention of article 8265);
            the denominator uses the unrotated features unless ``rope_in_denominator``. Requires n_q == n_k and an
            even feature size m.

    Returns:
        ``(..., n_q, d_v)`` in the promoted dtype, on phi_q's device. Matches :func:`linear_attention_naive` to
        rounding error (float64: ~1e-15 relative).
    """
    phi_q, phi_k, v = _qkv(phi_q, phi_k, v, ("phi_q", "phi_k", "v"))
    chunk_size = positive_int(chunk_size, "chunk_size")
    eps = finite_float(eps, "eps")
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    if causal:
        _check_causal(phi_q.shape[-2], phi_k.shape[-2])
    qn, kn, qd, kd = phi_q, phi_k, phi_q, phi_k
    if rope_positions is not None:
        from .positions import apply_rope  # lazy: only the RoPE chapter needs it
        if phi_q.shape[-2] != phi_k.shape[-2]:
            raise ValueError("rope_positions needs as many queries as keys")
        if phi_q.shape[-1] % 2:
            raise ValueError(f"RoPE needs an even feature size, got {phi_q.shape[-1]}")
        qn, kn = apply_rope(phi_q, rope_positions), apply_rope(phi_k, rope_positions)
        if rope_in_denominator:
            qd, kd = qn, kn
    num, den = _linear_parts(qn, kn, v, qd, kd, causal, chunk_size)
    return num / (den + eps).unsqueeze(-1)


def performer_features(x: Any, W: Any, is_query: bool, drop_norm: bool = False, stabilize: bool = True) -> torch.Tensor:
    """Performer's positive random features ``m^{-1/2} exp(W x - |x|^2 / 2)`` (FAVOR+).

    For ``omega ~ N(0, I_d)``, ``E[exp(omega.q - |q|^2/2) exp(omega.k - |k|^2/2)] = exp(q.k)``, so
    ``performer_features(q) . performer_features(k)`` is an unbiased estimate of ``exp(q.k)`` when
    ``stabilize=False`` and ``drop_norm=False``.

    Args:
        x: inputs ``(..., n, d)`` (scale them by ``d^{-1/4}`` for the usual ``1/sqrt(d)`` softmax temperature).
        W: projection ``(m, d)``, rows = the random vectors omega_l (i.i.d. Gaussian or
            :func:`gaussian_orthogonal_matrix`).
        is_query: how to stabilise: queries subtract their own row max of ``W x`` (a per-query factor, which
            row-normalised attention ignores exactly); keys subtract one max over all keys and features of each
            batch element (a constant, also exact for attention). Both change the kernel *estimate* by a positive
            factor, so use ``stabilize=False`` when the value of ``exp(q.k)`` itself matters.
        drop_norm: omit the ``-|x|^2/2`` term (exact for queries in attention; only approximate for keys).
        stabilize: apply the max subtraction described above.

    Returns:
        ``(..., n, m)`` non-negative features in the promoted dtype on x's device (W is moved there).
    """
    x = as_float_tensor(x, "x", min_ndim=2)
    W = as_float_tensor(W, "W", ndim=2)
    if W.shape[1] != x.shape[-1]:
        raise ValueError(f"W must have shape (m, d) with d = x.shape[-1] = {x.shape[-1]}, got {tuple(W.shape)}")
    x, W = _common(x, W)
    logits = x @ W.T                                               # (..., n, m)
    if not drop_norm:
        logits = logits - 0.5 * (x * x).sum(dim=-1, keepdim=True)
    if stabilize:
        if is_query:
            logits = logits - logits.amax(dim=-1, keepdim=True)
        else:
            logits = logits - logits.amax(dim=(-2, -1), keepdim=True)
    return torch.exp(logits) / math.sqrt(W.shape[0])


def gaussian_orthogonal_matrix(m: int, d: int, generator: torch.Generator | None = None, *,
                               dtype: torch.dtype = torch.float64, device: Any = None) -> torch.Tensor:
    """Orthogonal random features: ``(m, d)`` whose rows are exactly orthogonal within each block of d rows and
    each marginally ``N(0, I_d)`` (directions from QR of a Gaussian block, norms from independent chi_d draws, as
    performer-pytorch's ``gaussian_orthogonal_random_matrix(..., scaling=0)``).

    Args:
        m: number of features (rows), d: dimension. generator: torch generator (its device wins over ``device``).
    """
    m = positive_int(m, "m")
    d = positive_int(d, "d")
    dev = generator.device if generator is not None else (torch.device(device) if device is not None else None)
    blocks = []
    for _ in range(math.ceil(m / d)):
        G = torch.randn(d, d, generator=generator, dtype=dtype, device=dev)
        Qm, R = torch.linalg.qr(G)
        Qm = Qm * torch.sign(torch.diagonal(R)).unsqueeze(0)  # Haar-distributed orthogonal matrix
        blocks.append(Qm.T)
    directions = torch.cat(blocks)[:m]                         # (m, d) unit rows
    norms = torch.randn(m, d, generator=generator, dtype=dtype, device=dev).norm(dim=1, keepdim=True)
    return directions * norms




def _xlogx(a: torch.Tensor) -> torch.Tensor:
    return torch.where(a > 0, a * torch.log(torch.where(a > 0, a, torch.ones_like(a))), torch.zeros_like(a))


def attention_entropy(A: Any, normalized: bool = True, *, chunk_size: int = 4096) -> torch.Tensor:
    """Row entropies ``H(a_i) = -sum_j a_ij log a_ij`` (nats, ``0 log 0 = 0``) of an attention matrix.

    Args:
        A: ``(..., n_q, n_k)`` non-negative rows; each row is normalised to sum 1 here (so unnormalised
            similarities are fine). Processed in blocks of ``chunk_size`` rows to bound temporaries.
        normalized: divide by ``log n_k`` (the entropy of the uniform row), giving values in [0, 1].

    Returns:
        ``(..., n_q)`` on A's device. For softmax rows straight from q and k without forming the matrix, see
        ``utils.entropy.attention_row_entropy``; for linear attention, :func:`linear_attention_entropy`.
    """
    A = as_float_tensor(A, "A", min_ndim=2)
    chunk_size = positive_int(chunk_size, "chunk_size")
    n_k = A.shape[-1]
    if normalized and n_k < 2:
        raise ValueError("normalized entropy needs at least 2 keys")
    if A.numel() and bool((A < 0).any()):
        raise ValueError("A must be non-negative")
    out = []
    for start in range(0, A.shape[-2], chunk_size):
        block = A[..., start:start + chunk_size, :]
        block = block / block.sum(dim=-1, keepdim=True)
        out.append(-_xlogx(block).sum(dim=-1))
    H = torch.cat(out, dim=-1)
    return H / math.log(n_k) if normalized else H


def linear_attention_entropy(phi_q: Any, phi_k: Any, normalized: bool = True, *, causal: bool = False,
                             chunk_size: int = 1024) -> torch.Tensor:
    """Row entropies of the linear-attention matrix without forming it: blocks of ``chunk_size`` query rows
    against all keys, memory ``chunk_size x n_k``.

    Args:
        phi_q ``(..., n_q, m)``, phi_k ``(..., n_k, m)``: non-negative features. causal: rows over j <= i only
            (normalised by ``log(i + 1)``; row 0 then has entropy 0 and is reported as 0).
        normalized: divide by ``log n_k`` (or ``log(i+1)`` when causal).

    Returns:
        ``(..., n_q)``; equals ``attention_entropy(linear_attention_matrix(phi_q, phi_k))``.
    """
    phi_q, phi_k = _qkv(phi_q, phi_k, None, ("phi_q", "phi_k", "v"))
    chunk_size = positive_int(chunk_size, "chunk_size")
    n_q, n_k = phi_q.shape[-2], phi_k.shape[-2]
    if causal:
        _check_causal(n_q, n_k)
    if normalized and n_k < 2:
        raise ValueError("normalized entropy needs at least 2 keys")
    out = []
    for start in range(0, n_q, chunk_size):
        sim = phi_q[..., start:start + chunk_size, :] @ phi_k.transpose(-1, -2)   # (..., c, n_k)
        if causal:
            rows = torch.arange(start, start + sim.shape[-2], device=sim.device).unsqueeze(-1)
            sim = sim.masked_fill(torch.arange(n_k, device=sim.device) > rows, 0.0)
        out.append(-_xlogx(sim / sim.sum(dim=-1, keepdim=True)).sum(dim=-1))
    H = torch.cat(out, dim=-1)
    if not normalized:
        return H
    if causal:
        counts = torch.arange(1, n_q + 1, dtype=H.dtype, device=H.device)
        return torch.where(counts > 1, H / torch.log(counts.clamp(min=2)), torch.zeros_like(H))
    return H / math.log(n_k)


def rank_collapse_residual(X: Any) -> torch.Tensor:
    """Relative distance to rank one: ``|X - 1 xbar^T|_F / |X|_F`` with ``xbar`` the mean row (column means).

    Args:
        X: ``(..., n, d)`` token representations, n >= 1.

    Returns:
        ``(...)`` tensor (a 0-d tensor for a single matrix; use ``float()``). 0 means every row is identical
        (the attention rank collapse of Dong et al. 2021).
    """
    X = as_float_tensor(X, "X", min_ndim=2)
    if X.shape[-2] < 1 or X.shape[-1] < 1:
        raise ValueError(f"X must have at least one row and one column, got shape {tuple(X.shape)}")
    centred = X - X.mean(dim=-2, keepdim=True)
    return torch.linalg.matrix_norm(centred) / torch.linalg.matrix_norm(X)
