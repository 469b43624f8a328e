"""Orthogonal maps that send one unit vector to another (kexue.fm/archives/8453), batched, in torch.

For unit vectors a, b in R^d (d >= 2) with cos(theta) = a^T b, write u = (a + b)/|a + b| (the unit bisector) and
w = (a - b)/|a - b|. Three orthogonal matrices T with T a = b are provided (column-vector convention b = T a; for a
batch of row vectors X (n, d) use X T^T, or :func:`apply_orthogonal_map`):

* ``"rotation"``:    T = I + 2 b a^T - 2 u u^T  (= I + 2 b a^T - (a+b)(a+b)^T / (1 + cos)), det +1: the minimal
  rotation in the (a, b) plane, identity on its orthogonal complement (Rodrigues' rotation about a x b in 3-D).
* ``"householder"``: T = I - 2 w w^T          (= I - (a-b)(a-b)^T / (1 - cos)), det -1: the reflection across the
  hyperplane orthogonal to a - b; symmetric, an involution, also maps b to a.
* ``"symmetric"``:   T = 2 u u^T - I          (= (a+b)(a+b)^T / (1 + cos) - I), det (-1)^(d-1): the reflection
  through the line spanned by a + b; symmetric, an involution, also maps b to a.

Numerical evaluation (``formula``):

* ``"naive"``: the textbook denominators 1 +- a^T b. They lose all relative precision when a ~ +-b (1 - cos theta
  rounds to 0 for theta < 1e-8 in float64, giving inf/nan); kept only as a reference for demonstrations.
* ``"direct"``: the denominators as |a +- b|^2 / 2, i.e. the forms above with normalised u and w (no fallbacks).
* ``"stable"`` (default): as ``"direct"``, and the rotation evaluated as the product of two Householder
  reflections, T_rot = (I - 2 b b^T)(I - 2 u u^T) (the first sends a to -b, the second -b to b). A product of two
  reflections built from unit vectors is orthogonal to rounding error whatever the rounding in u, whereas
  I + 2 b a^T - 2 u u^T loses orthogonality like eps / |a + b| near b = -a (the identity that makes it orthogonal
  needs b^T u = |a + b| / 2 exactly). Near b = -a (rotation, symmetric) and b = a (Householder) the map itself is
  ill-conditioned: |T a - b| is of order eps / |a -+ b| there, which no formula avoids.

Degenerate inputs (only with ``formula="stable"``): the plane of (a, b) is undetermined when b = -a, and w is 0/0
when b = a. Let p be a fixed unit vector orthogonal to a (p = normalised e_j - a_j a with j = argmin_j |a_j|). Then

* rotation,  |a + b| <= sqrt(eps):  u := p, i.e. T = (I - 2 b b^T)(I - 2 p p^T), a rotation by pi in the plane (a, p)
  (exactly I - 2 a a^T - 2 p p^T when b = -a; in 2-D this is -I);
* symmetric, |a + b| <= sqrt(eps):  u := p, i.e. T = 2 p p^T - I (maps a to -a);
* householder, |a - b| <= sqrt(eps): w := p, i.e. T = I - 2 p p^T, the reflection that fixes a (not T = I: every
  limit of I - 2 w w^T as b -> a is such a reflection, and keeping det = -1 keeps the form's meaning).

eps is the machine epsilon of the dtype. The threshold sqrt(eps) balances the two errors: the fallback maps a to
within |a -+ b| of b, the general formula to within ~eps / |a -+ b|, so |T a - b| <~ sqrt(eps) everywhere. Each
form keeps its determinant for every input. For b = a the rotation and symmetric forms need no fallback
(T_rot = I, T_sym = 2 a a^T - I); for b = -a the Householder form needs none (T = I - 2 a a^T).

All kernels accept torch tensors or numpy arrays of dtype float32 or float64 (other dtypes raise ``ValueError``),
broadcast leading dimensions, and compute on the inputs' device (CUDA when the inputs are there) in their dtype.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = ["KINDS", "FORMULAS", "orthogonal_map", "apply_orthogonal_map", "complete_basis", "orthogonality_error"]

KINDS = ("rotation", "householder", "symmetric")
FORMULAS = ("stable", "direct", "naive")
_DTYPES = (torch.float32, torch.float64)


def _as_tensor(x: Any, name: str) -> torch.Tensor:
    """``x`` as a float32/float64 tensor with at least one dimension; anything else raises ``ValueError``."""
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch tensor or numpy array, got {type(x).__name__}")
    if x.dtype not in _DTYPES:
        raise ValueError(f"{name} must have dtype float32 or float64, got {x.dtype}")
    if x.ndim < 1:
        raise ValueError(f"{name} must have at least one dimension (..., d), got a scalar")
    return x


def _check_kind(kind: Any) -> str:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    return kind


def _prepare(a: Any, b: Any, normalize: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate a, b (..., d); return them broadcast to a common shape and (optionally) normalised."""
    a = _as_tensor(a, "a")
    b = _as_tensor(b, "b")
    if a.dtype != b.dtype:
        raise ValueError(f"a and b must have the same dtype, got {a.dtype} and {b.dtype}")
    if a.device != b.device:
        raise ValueError(f"a and b must be on the same device, got {a.device} and {b.device}")
    if a.shape[-1] != b.shape[-1]:
        raise ValueError(f"a and b must have the same last dimension d, got shapes {tuple(a.shape)} and "
                         f"{tuple(b.shape)}")
    if a.shape[-1] < 2:
        raise ValueError(f"the vectors must have dimension d >= 2, got d = {a.shape[-1]}")
    try:
        shape = torch.broadcast_shapes(a.shape, b.shape)
    except RuntimeError:
        raise ValueError(f"the leading dimensions of a {tuple(a.shape)} and b {tuple(b.shape)} do not "
                         "broadcast") from None
    a, b = a.expand(shape), b.expand(shape)
    norms = torch.stack([torch.linalg.vector_norm(a, dim=-1), torch.linalg.vector_norm(b, dim=-1)])
    if not bool(torch.isfinite(norms).all()):
        raise ValueError("a and b must be finite (found inf or nan)")
    if normalize:
        if bool((norms == 0).any()):
            raise ValueError("a and b must be nonzero vectors (found a zero vector; its direction is undefined)")
        a = a / norms[0].unsqueeze(-1)
        b = b / norms[1].unsqueeze(-1)
    else:
        tol = float(torch.finfo(a.dtype).eps) ** 0.5
        worst = float((norms - 1).abs().max())
        if worst > tol:
            raise ValueError(f"with normalize=False, a and b must be unit vectors (|norm - 1| <= {tol:.1e}), "
                             f"found |norm - 1| = {worst:.2e}; pass normalize=True")
    return a, b


def _unit_orthogonal(a: torch.Tensor) -> torch.Tensor:
    """A deterministic unit vector orthogonal to each unit a (..., d): normalised e_j - a_j a, j = argmin |a_j|.
    |e_j - a_j a|^2 = 1 - a_j^2 >= 1 - 1/d >= 1/2, so the normalisation is well conditioned."""
    j = a.abs().argmin(dim=-1, keepdim=True)
    e = torch.zeros_like(a).scatter_(-1, j, 1.0)
    p = e - torch.gather(a, -1, j) * a
    p = p - (p * a).sum(-1, keepdim=True) * a  # second Gram-Schmidt pass: orthogonal to a to rounding error
    return p / torch.linalg.vector_norm(p, dim=-1, keepdim=True)


def _unit_or_fallback(v: torch.Tensor, fallback: torch.Tensor, threshold: float) -> torch.Tensor:
    """v / |v| where |v| > threshold, else ``fallback`` (rows with a tiny |v| never divide by ~0)."""
    norm = torch.linalg.vector_norm(v, dim=-1, keepdim=True)
    degenerate = norm <= threshold
    unit = v / torch.where(degenerate, torch.ones_like(norm), norm)
    return torch.where(degenerate, fallback, unit)


def _reflection_vectors(a: torch.Tensor, b: torch.Tensor, kind: str) -> torch.Tensor:
    """The unit vector of the stable formula: u (rotation, symmetric) or w (householder), with fallbacks."""
    threshold = float(torch.finfo(a.dtype).eps) ** 0.5
    p = _unit_orthogonal(a)
    if kind == "householder":
        return _unit_or_fallback(a - b, p, threshold)
    return _unit_or_fallback(a + b, p, threshold)


def _outer(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return x.unsqueeze(-1) * y.unsqueeze(-2)


def orthogonal_map(a: Any, b: Any, kind: str = "rotation", *, normalize: bool = True,
                   formula: str = "stable") -> torch.Tensor:
    """The orthogonal matrix T of the given ``kind`` with T a = b (see the module docstring for the formulas).

    Args:
        a, b: (..., d) tensors or numpy arrays, float32 or float64, d >= 2, leading dimensions broadcast
            (e.g. a (d,) and b (n, d)). Zero vectors raise ``ValueError``.
        kind: ``"rotation"`` (det +1), ``"householder"`` (det -1) or ``"symmetric"`` (det (-1)^(d-1)).
        normalize: divide a and b by their norms first (default). With ``False`` they must already be unit
            vectors to within sqrt(eps), else ``ValueError`` (the formulas silently stop being orthogonal otherwise).
        formula: ``"stable"`` (default, with the documented fallbacks at b = +-a), ``"direct"`` (denominators
            |a +- b|^2 / 2, no fallbacks) or ``"naive"`` (denominators 1 +- a^T b, no fallbacks; inf/nan when
            they round to zero). The last two are references for demonstrations.

    Returns:
        T of shape (..., d, d) (the broadcast leading shape), same dtype and device as the inputs.
        O(d^2) memory per pair: for applying T to vectors use :func:`apply_orthogonal_map` (O(d) per vector).
    """
    kind = _check_kind(kind)
    if formula not in FORMULAS:
        raise ValueError(f"formula must be one of {FORMULAS}, got {formula!r}")
    a, b = _prepare(a, b, normalize)
    d = a.shape[-1]
    eye = torch.eye(d, dtype=a.dtype, device=a.device)
    if formula == "naive":
        cos = (a * b).sum(-1)[..., None, None]  # (..., 1, 1)
        if kind == "rotation":
            return eye + 2 * _outer(b, a) - _outer(a + b, a + b) / (1 + cos)
        if kind == "householder":
            return eye - _outer(a - b, a - b) / (1 - cos)
        return _outer(a + b, a + b) / (1 + cos) - eye
    if formula == "direct":
        v = a - b if kind == "householder" else a + b
        v = v / torch.linalg.vector_norm(v, dim=-1, keepdim=True)
    else:
        v = _reflection_vectors(a, b, kind)
    if kind == "householder":
        return eye - 2 * _outer(v, v)
    if kind == "symmetric":
        return 2 * _outer(v, v) - eye
    if formula == "direct":
        return eye + 2 * _outer(b, a) - 2 * _outer(v, v)
    # (I - 2 b b^T)(I - 2 u u^T) = I - 2 u u^T - 2 b h^T with h = (I - 2 u u^T) b = b - 2 (u^T b) u
    h = b - 2 * (v * b).sum(-1, keepdim=True) * v
    return eye - 2 * _outer(v, v) - 2 * _outer(b, h)


def apply_orthogonal_map(a: Any, b: Any, x: Any, kind: str = "rotation", *, normalize: bool = True) -> torch.Tensor:
    """T x for the map T of :func:`orthogonal_map` (stable formula, same fallbacks), without forming T.

    Costs O(d) per vector instead of O(d^2): with the unit vector v of the chosen form (u or w),
    rotation: y = x - 2 u (u^T x), T x = y - 2 b (b^T y); householder: T x = x - 2 w (w^T x);
    symmetric: T x = 2 u (u^T x) - x.

    Args:
        a, b: (..., d) as for :func:`orthogonal_map` (float32/float64, leading dimensions broadcast).
        x: (..., d) vectors to transform, same dtype and device as a and b; its leading dimensions broadcast with
            those of a and b. One map applied to n vectors: a, b (d,) and x (n, d). A batch of B maps applied to m
            vectors each: a, b (B, 1, d) and x (B, m, d).
        kind, normalize: as for :func:`orthogonal_map`.

    Returns:
        T x with the broadcast shape (..., d), same dtype and device as the inputs. Rows of a row-vector batch X
        are mapped as X T^T (i.e. each row x to T x).
    """
    kind = _check_kind(kind)
    a, b = _prepare(a, b, normalize)
    x = _as_tensor(x, "x")
    if x.dtype != a.dtype or x.device != a.device:
        raise ValueError(f"x must have the dtype and device of a and b ({a.dtype}, {a.device}), got "
                         f"({x.dtype}, {x.device})")
    if x.shape[-1] != a.shape[-1]:
        raise ValueError(f"x must have last dimension d = {a.shape[-1]}, got shape {tuple(x.shape)}")
    try:
        torch.broadcast_shapes(a.shape, x.shape)
    except RuntimeError:
        raise ValueError(f"the leading dimensions of x {tuple(x.shape)} do not broadcast with those of a and b "
                         f"{tuple(a.shape)}") from None
    v = _reflection_vectors(a, b, kind)
    coef = (v * x).sum(-1, keepdim=True)
    if kind == "householder":
        return x - 2 * coef * v
    if kind == "symmetric":
        return 2 * coef * v - x
    y = x - 2 * coef * v
    return y - 2 * (b * y).sum(-1, keepdim=True) * b


def complete_basis(q: Any, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """An orthonormal basis E of the orthogonal complement of the columns of q.

    Args:
        q: (..., d, k) with orthonormal columns (q^T q = I_k to within sqrt(eps), else ``ValueError``), k <= d,
            float32/float64, any device.
        generator: torch.Generator for the random completion (drawn on the generator's device, moved to q's).

    Returns:
        E of shape (..., d, d - k), same dtype/device as q, with E^T E = I and q^T E = 0 (to rounding), so that
        (q E) is orthogonal and E E^T = I - q q^T. E is random: the QR factorisation of [q, G] with a Gaussian G
        (..., d, d - k); its last d - k columns span the complement (the first k span the columns of q).
    """
    q = _as_tensor(q, "q")
    if q.ndim < 2:
        raise ValueError(f"q must have shape (..., d, k), got {tuple(q.shape)}")
    d, k = q.shape[-2], q.shape[-1]
    if k > d:
        raise ValueError(f"q has more columns than rows ({k} > {d}); its columns cannot be orthonormal")
    eye_k = torch.eye(k, dtype=q.dtype, device=q.device)
    tol = float(torch.finfo(q.dtype).eps) ** 0.5
    if k > 0 and float((q.transpose(-1, -2) @ q - eye_k).abs().max()) > tol:
        raise ValueError(f"the columns of q must be orthonormal (|q^T q - I|_max <= {tol:.1e})")
    dev = generator.device if generator is not None else torch.device("cpu")
    g = torch.randn(*q.shape[:-1], d - k, generator=generator, device=dev, dtype=q.dtype).to(q.device)
    full, _ = torch.linalg.qr(torch.cat([q, g], dim=-1))  # (..., d, d)
    return full[..., k:]


def orthogonality_error(t: Any) -> torch.Tensor:
    """max_ij |T^T T - I|_ij for a batch of square matrices t (..., d, d): returns shape (...)."""
    t = _as_tensor(t, "t")
    if t.ndim < 2 or t.shape[-1] != t.shape[-2]:
        raise ValueError(f"t must have shape (..., d, d), got {tuple(t.shape)}")
    eye = torch.eye(t.shape[-1], dtype=t.dtype, device=t.device)
    return (t.transpose(-1, -2) @ t - eye).abs().amax(dim=(-2, -1))
