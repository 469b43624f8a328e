"""Tests of utils.orthogonal: the maps T with T a = b against a naive dense construction and scipy."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch
from scipy.spatial.transform import Rotation

from utils.orthogonal import (FORMULAS, KINDS, apply_orthogonal_map, complete_basis, orthogonal_map,
                              orthogonality_error)

DET = {"rotation": lambda d: 1.0, "householder": lambda d: -1.0, "symmetric": lambda d: (-1.0) ** (d - 1)}


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _pair(d: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    gen = np.random.default_rng(seed)
    return _unit(gen.standard_normal(d)), _unit(gen.standard_normal(d))


def _dense_reference(a: np.ndarray, b: np.ndarray, kind: str) -> np.ndarray:
    """The article's construction: Gram-Schmidt plane Q = (a, e), 2x2 block R, identity (or -identity for the
    symmetric form) on the complement spanned by scipy's null space."""
    c = a @ b
    e = _unit(b - c * a)
    s = np.linalg.norm(b - c * a)
    q = np.stack([a, e], axis=1)
    if kind == "rotation":
        block, sign = np.array([[c, -s], [s, c]]), 1.0
    else:
        block, sign = np.array([[c, s], [s, -c]]), (1.0 if kind == "householder" else -1.0)
    basis = np.concatenate([q, scipy.linalg.null_space(q.T)], axis=1)
    diag = scipy.linalg.block_diag(block, sign * np.eye(len(a) - 2))
    return basis @ diag @ basis.T


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("d", [2, 3, 10, 50])
def test_matches_dense_construction(kind: str, d: int) -> None:
    a, b = _pair(d, seed=d)
    t = orthogonal_map(torch.from_numpy(a), torch.from_numpy(b), kind).numpy()
    np.testing.assert_allclose(t, _dense_reference(a, b, kind), atol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("formula", FORMULAS)
@pytest.mark.parametrize("d", [2, 3, 10, 100])
def test_orthogonal_maps_a_to_b_and_determinant(kind: str, formula: str, d: int) -> None:
    a, b = _pair(d, seed=100 + d)
    t = orthogonal_map(a, b, kind, formula=formula)
    assert t.shape == (d, d) and t.dtype == torch.float64
    assert float(orthogonality_error(t)) < 1e-12
    np.testing.assert_allclose(t.numpy() @ a, b, atol=1e-12)
    assert float(torch.linalg.det(t)) == pytest.approx(DET[kind](d), abs=1e-10)
    if kind != "rotation":  # the two reflections are symmetric involutions that also map b to a
        np.testing.assert_allclose(t.numpy(), t.numpy().T, atol=1e-14)
        np.testing.assert_allclose(t.numpy() @ b, a, atol=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_rotation_matches_scipy_in_3d(seed: int) -> None:
    a, b = _pair(3, seed=seed)
    t = orthogonal_map(a, b, "rotation").numpy()
    aligned, _ = Rotation.align_vectors(b[None], a[None])  # the rotation R minimising |b - R a|: the shortest one
    np.testing.assert_allclose(t, aligned.as_matrix(), atol=1e-12)
    axis = _unit(np.cross(a, b))
    rodrigues = Rotation.from_rotvec(axis * np.arccos(np.clip(a @ b, -1, 1))).as_matrix()
    np.testing.assert_allclose(t, rodrigues, atol=1e-12)


def test_rotation_is_exponential_of_plane_generator_and_fixes_complement() -> None:
    a, b = _pair(10, seed=7)
    c = a @ b
    e = _unit(b - c * a)
    theta = np.arccos(c)
    t = orthogonal_map(a, b, "rotation").numpy()
    np.testing.assert_allclose(t, scipy.linalg.expm(theta * (np.outer(e, a) - np.outer(a, e))), atol=1e-12)
    v = scipy.linalg.null_space(np.stack([a, b]))  # (10, 8): vectors orthogonal to a and b
    np.testing.assert_allclose(t @ v, v, atol=1e-12)


def test_householder_matches_scipy_qr_reflector() -> None:
    # LAPACK's first Householder reflector maps x to -sign(x_1)|x| e_1 (scipy.linalg.qr, mode='raw')
    x = np.random.default_rng(3).standard_normal(6)
    (qr_raw, tau), _ = scipy.linalg.qr(x[:, None], mode="raw")
    v = np.concatenate([[1.0], qr_raw[1:, 0]])
    lapack = np.eye(6) - tau[0] * np.outer(v, v)
    target = np.zeros(6)
    target[0] = qr_raw[0, 0]
    t = orthogonal_map(x, target, "householder").numpy()
    np.testing.assert_allclose(t, lapack, atol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
def test_batched_shapes_broadcasting_and_float32(kind: str) -> None:
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(4, 1, 6, generator=gen, dtype=torch.float64)
    b = torch.randn(3, 6, generator=gen, dtype=torch.float64)
    t = orthogonal_map(a, b, kind)
    assert t.shape == (4, 3, 6, 6)
    for i in range(4):
        for j in range(3):
            torch.testing.assert_close(t[i, j], orthogonal_map(a[i, 0], b[j], kind), atol=1e-14, rtol=0)
    t32 = orthogonal_map(a.float(), b.float(), kind)
    assert t32.dtype == torch.float32
    assert float(orthogonality_error(t32).max()) < 1e-5
    torch.testing.assert_close(t32.double(), t, atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", KINDS)
def test_apply_matches_dense(kind: str) -> None:
    gen = torch.Generator().manual_seed(1)
    a = torch.randn(5, 1, 8, generator=gen, dtype=torch.float64)
    b = torch.randn(5, 1, 8, generator=gen, dtype=torch.float64)
    x = torch.randn(5, 7, 8, generator=gen, dtype=torch.float64)
    dense = orthogonal_map(a, b, kind)  # (5, 1, 8, 8)
    expected = (dense @ x.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(apply_orthogonal_map(a, b, x, kind), expected, atol=1e-13, rtol=0)
    # one map, many row vectors: X T^T
    xs = torch.randn(20, 8, generator=gen, dtype=torch.float64)
    got = apply_orthogonal_map(a[0, 0], b[0, 0], xs, kind)
    torch.testing.assert_close(got, xs @ dense[0, 0].T, atol=1e-13, rtol=0)
    # a itself goes to b / |b|
    torch.testing.assert_close(apply_orthogonal_map(a, b, a / a.norm(dim=-1, keepdim=True), kind),
                               b / b.norm(dim=-1, keepdim=True), atol=1e-13, rtol=0)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("d", [2, 3, 9])
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_degenerate_inputs(kind: str, d: int, sign: float) -> None:
    a = torch.from_numpy(_pair(d, seed=11)[0])
    b = sign * a
    t = orthogonal_map(a, b, kind)
    assert bool(torch.isfinite(t).all())
    assert float(orthogonality_error(t)) < 1e-14
    torch.testing.assert_close(t @ a, b, atol=1e-14, rtol=0)
    assert float(torch.linalg.det(t)) == pytest.approx(DET[kind](d), abs=1e-10)  # each form keeps its det
    torch.testing.assert_close(apply_orthogonal_map(a, b, a, kind), b, atol=1e-14, rtol=0)
    eye = torch.eye(d, dtype=torch.float64)
    if kind == "rotation" and sign > 0:
        torch.testing.assert_close(t, eye, atol=1e-15, rtol=0)
    if kind == "rotation" and sign < 0:  # rotation by pi in a plane containing a: t^2 = I, trace d - 4
        torch.testing.assert_close(t @ t, eye, atol=1e-14, rtol=0)
        assert float(torch.trace(t)) == pytest.approx(d - 4, abs=1e-12)
        if d == 2:
            torch.testing.assert_close(t, -eye, atol=1e-15, rtol=0)
    if kind == "householder" and sign > 0:  # the reflection fixing a (not I: keeps det -1)
        torch.testing.assert_close(t @ t, eye, atol=1e-14, rtol=0)
        assert float(torch.trace(t)) == pytest.approx(d - 2, abs=1e-12)
    if kind == "householder" and sign < 0:
        torch.testing.assert_close(t, eye - 2 * torch.outer(a, a), atol=1e-15, rtol=0)
    if kind == "symmetric" and sign > 0:
        torch.testing.assert_close(t, 2 * torch.outer(a, a) - eye, atol=1e-15, rtol=0)


def test_degenerate_rows_inside_a_batch_and_near_degenerate() -> None:
    gen = torch.Generator().manual_seed(2)
    a = torch.randn(6, 5, generator=gen, dtype=torch.float64)
    a = a / a.norm(dim=-1, keepdim=True)
    b = torch.randn(6, 5, generator=gen, dtype=torch.float64)
    b[0], b[1] = a[0], -a[1]
    b[2] = -a[2] + 1e-7 * torch.randn(5, generator=gen, dtype=torch.float64)  # near-opposite, above threshold
    b[3] = a[3] + 1e-7 * torch.randn(5, generator=gen, dtype=torch.float64)   # near-equal
    bn = b / b.norm(dim=-1, keepdim=True)
    for kind in KINDS:
        t = orthogonal_map(a, b, kind)
        assert float(orthogonality_error(t).max()) < 1e-13
        torch.testing.assert_close((t @ a.unsqueeze(-1)).squeeze(-1), bn, atol=1e-8, rtol=0)


def test_naive_formula_fails_where_stable_does_not() -> None:
    a = torch.from_numpy(_pair(50, seed=0)[0])
    w = torch.from_numpy(_pair(50, seed=1)[1])
    w = w - (w @ a) * a
    w = w / w.norm()
    b = torch.cos(torch.tensor(1e-6, dtype=torch.float64)) * a + torch.sin(torch.tensor(1e-6, dtype=torch.float64)) * w
    naive = orthogonality_error(orthogonal_map(a, b, "householder", formula="naive"))
    stable = orthogonality_error(orthogonal_map(a, b, "householder"))
    assert float(naive) > 1e-8 and float(stable) < 1e-14
    b = torch.cos(torch.tensor(np.pi - 1e-6)) * a + torch.sin(torch.tensor(np.pi - 1e-6)) * w
    assert float(orthogonality_error(orthogonal_map(a, b, "rotation"))) < 1e-14  # product of two reflections


@pytest.mark.parametrize("k", [0, 1, 2, 5])
def test_complete_basis(k: int) -> None:
    gen = torch.Generator().manual_seed(k)
    q, _ = torch.linalg.qr(torch.randn(3, 7, k, generator=gen, dtype=torch.float64))
    e = complete_basis(q, generator=gen)
    assert e.shape == (3, 7, 7 - k)
    full = torch.cat([q, e], dim=-1)
    torch.testing.assert_close(full.transpose(-1, -2) @ full, torch.eye(7, dtype=torch.float64).expand(3, 7, 7),
                               atol=1e-13, rtol=0)
    torch.testing.assert_close(e @ e.transpose(-1, -2), torch.eye(7, dtype=torch.float64) - q @ q.transpose(-1, -2),
                               atol=1e-13, rtol=0)


def test_numpy_inputs_and_normalize_flag() -> None:
    a, b = _pair(4, seed=5)
    t = orthogonal_map(3.0 * a, 0.5 * b, "symmetric")
    torch.testing.assert_close(t, orthogonal_map(a, b, "symmetric", normalize=False), atol=1e-14, rtol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("kind", KINDS)
def test_cuda_matches_cpu(kind: str) -> None:
    gen = torch.Generator().manual_seed(4)
    a = torch.randn(64, 16, generator=gen, dtype=torch.float64)
    b = torch.randn(64, 16, generator=gen, dtype=torch.float64)
    b[0] = -a[0]
    x = torch.randn(64, 16, generator=gen, dtype=torch.float64)
    t = orthogonal_map(a.cuda(), b.cuda(), kind)
    assert t.device.type == "cuda"
    torch.testing.assert_close(t.cpu(), orthogonal_map(a, b, kind), atol=1e-13, rtol=0)
    torch.testing.assert_close(apply_orthogonal_map(a.cuda(), b.cuda(), x.cuda(), kind).cpu(),
                               apply_orthogonal_map(a, b, x, kind), atol=1e-13, rtol=0)


def test_validation_errors() -> None:
    a, b = _pair(4)
    with pytest.raises(ValueError, match="same last dimension"):
        orthogonal_map(a, b[:3])
    with pytest.raises(ValueError, match="do not broadcast"):
        orthogonal_map(np.ones((2, 4)), np.ones((3, 4)))
    with pytest.raises(ValueError, match="nonzero"):
        orthogonal_map(np.zeros(4), b)
    with pytest.raises(ValueError, match="nonzero"):
        apply_orthogonal_map(a, np.zeros(4), a)
    with pytest.raises(ValueError, match="float32 or float64"):
        orthogonal_map(np.arange(4), b)
    with pytest.raises(ValueError, match="float32 or float64"):
        orthogonal_map(torch.ones(4, dtype=torch.float16), torch.ones(4, dtype=torch.float16))
    with pytest.raises(ValueError, match="same dtype"):
        orthogonal_map(a.astype(np.float32), b)
    with pytest.raises(ValueError, match="kind must be one of"):
        orthogonal_map(a, b, "reflection")
    with pytest.raises(ValueError, match="kind must be one of"):
        apply_orthogonal_map(a, b, a, "givens")
    with pytest.raises(ValueError, match="formula must be one of"):
        orthogonal_map(a, b, formula="fast")
    with pytest.raises(ValueError, match="d >= 2"):
        orthogonal_map(np.ones(1), np.ones(1))
    with pytest.raises(ValueError, match="unit vectors"):
        orthogonal_map(2 * a, b, normalize=False)
    with pytest.raises(ValueError, match="finite"):
        orthogonal_map(np.full(4, np.nan), b)
    with pytest.raises(ValueError, match="torch tensor or numpy"):
        orthogonal_map([1.0, 0.0], [0.0, 1.0])
    with pytest.raises(ValueError, match="last dimension"):
        apply_orthogonal_map(a, b, np.ones(3))
    with pytest.raises(ValueError, match="dtype and device"):
        apply_orthogonal_map(a, b, np.ones(4, dtype=np.float32))
    with pytest.raises(ValueError, match="orthonormal"):
        complete_basis(np.ones((4, 2)))
    with pytest.raises(ValueError, match="more columns"):
        complete_basis(np.eye(3)[:2])
    with pytest.raises(ValueError, match=r"\(\.\.\., d, d\)"):
        orthogonality_error(np.ones((2, 3)))
