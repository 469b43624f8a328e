"""utils.positions: interleaved RoPE against explicit rotation matrices and Hugging Face's rotate_half layout."""
import math

import numpy as np
import pytest
import torch

from utils.positions import apply_rope, rope_inv_freq


def naive_rope(x: torch.Tensor, positions: torch.Tensor, inv_freq: torch.Tensor) -> torch.Tensor:
    """x (T, d), positions (T,): multiply each vector by the block-diagonal matrix of 2x2 rotations."""
    out = torch.empty_like(x)
    for t in range(x.shape[0]):
        blocks = []
        for theta in inv_freq.tolist():
            angle = float(positions[t]) * theta
            blocks.append(torch.tensor([[math.cos(angle), -math.sin(angle)],
                                        [math.sin(angle), math.cos(angle)]], dtype=x.dtype))
        rotation = torch.block_diag(*blocks)  # (d, d)
        out[t] = rotation @ x[t]
    return out


def test_inv_freq_formula_dtype_device():
    freqs = rope_inv_freq(8, dtype=torch.float64)
    expected = torch.tensor([10000.0 ** (-2 * i / 8) for i in range(4)], dtype=torch.float64)
    assert freqs.dtype == torch.float64 and freqs.shape == (4,)
    assert torch.allclose(freqs, expected, rtol=1e-15, atol=0)
    assert rope_inv_freq(6, base=100.0, dtype=torch.float32).dtype == torch.float32
    assert rope_inv_freq(4).dtype == torch.get_default_dtype()


def test_apply_rope_matches_explicit_rotations():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(9, 12, generator=gen, dtype=torch.float64)
    positions = torch.arange(9)
    inv_freq = rope_inv_freq(12, dtype=torch.float64)
    assert torch.allclose(apply_rope(x, positions), naive_rope(x, positions, inv_freq), atol=1e-14, rtol=0)
    # arbitrary (non-standard) frequencies and float positions
    odd_freq = torch.rand(6, generator=gen, dtype=torch.float64)
    float_pos = torch.rand(9, generator=gen, dtype=torch.float64) * 50
    assert torch.allclose(apply_rope(x, float_pos, odd_freq), naive_rope(x, float_pos, odd_freq), atol=1e-13, rtol=0)


def test_relativity_and_norm_preservation():
    gen = torch.Generator().manual_seed(1)
    q, k = torch.randn(2, 16, generator=gen, dtype=torch.float64)
    for m, n in [(0, 5), (3, 11), (40, 7), (123, 123)]:
        lhs = apply_rope(q, m) @ apply_rope(k, n)
        rhs = q @ apply_rope(k, n - m)
        assert abs(lhs - rhs) < 1e-12
        assert abs(apply_rope(q, m).norm() - q.norm()) < 1e-12


def test_batch_broadcasting_dtype_and_numpy():
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(2, 3, 5, 8, generator=gen)  # (B, H, T, d) float32
    out = apply_rope(x, torch.arange(5))
    assert out.shape == x.shape and out.dtype == torch.float32
    for b in range(2):
        for h in range(3):
            ref = naive_rope(x[b, h].double(), torch.arange(5), rope_inv_freq(8, dtype=torch.float64))
            assert torch.allclose(out[b, h].double(), ref, atol=1e-5)
    out_np = apply_rope(x.numpy(), np.arange(5))
    assert isinstance(out_np, torch.Tensor) and torch.allclose(out_np, out)
    # per-batch positions of shape (B, 1, T) broadcast too
    pos = torch.stack([torch.arange(5), torch.arange(5) + 10])[:, None, :]
    assert torch.allclose(apply_rope(x, pos)[1], apply_rope(x[1], torch.arange(5) + 10))


def test_matches_hugging_face_rotate_half_up_to_permutation():
    """Peer: HF pairs x[i] with x[i + d/2]; permuting the coordinates maps one layout onto the other."""
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    gen = torch.Generator().manual_seed(3)
    d, T = 16, 10
    q = torch.randn(1, 2, T, d, generator=gen, dtype=torch.float64)
    inv_freq = rope_inv_freq(d, dtype=torch.float64)
    angles = torch.arange(T, dtype=torch.float64)[:, None] * inv_freq   # (T, d/2)
    emb = torch.cat([angles, angles], dim=-1)[None]                     # (1, T, d): HF's layout
    perm = torch.cat([torch.arange(0, d, 2), torch.arange(1, d, 2)])   # interleaved -> half layout
    hf_q, _ = apply_rotary_pos_emb(q[..., perm], q[..., perm], emb.cos(), emb.sin())
    ours = apply_rope(q, torch.arange(T))
    assert torch.allclose(ours[..., perm], hf_q, atol=1e-14, rtol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_follows_input():
    x = torch.randn(4, 8, device="cuda", dtype=torch.float64)
    out = apply_rope(x, torch.arange(4, device="cuda"))
    assert out.device.type == "cuda"
    assert torch.allclose(out.cpu(), apply_rope(x.cpu(), torch.arange(4)), atol=1e-12)


def test_validation():
    with pytest.raises(ValueError, match="even"):
        rope_inv_freq(7)
    with pytest.raises(ValueError, match="dim"):
        rope_inv_freq(0)
    with pytest.raises(ValueError, match="base"):
        rope_inv_freq(8, base=1.0)
    with pytest.raises(ValueError, match="base"):
        rope_inv_freq(8, base="big")
    with pytest.raises(ValueError, match="floating"):
        rope_inv_freq(8, dtype=torch.int64)
    with pytest.raises(ValueError, match="even"):
        apply_rope(torch.zeros(3, 5), torch.arange(3))
    with pytest.raises(ValueError, match="inv_freq"):
        apply_rope(torch.zeros(3, 8), torch.arange(3), torch.ones(3))
    with pytest.raises(ValueError, match="broadcast"):
        apply_rope(torch.zeros(3, 8), torch.arange(4))
    with pytest.raises(ValueError, match="layout"):
        apply_rope(torch.zeros(3, 8), torch.arange(3), layout="bogus")
    with pytest.raises(ValueError, match="real"):
        apply_rope(torch.zeros(3, 8, dtype=torch.complex64), torch.arange(3))


# ------------------------------------------------------------------------------------------------------------------
# Extended API: layouts, caching, dtypes, peers, 2-D RoPE, sinusoidal tables, relative-position helpers
# ------------------------------------------------------------------------------------------------------------------
from utils.positions import (  # noqa: E402
    alibi_bias, apply_rope_2d, axial_positions, interleaved_to_half_perm, relative_index, rope_2d_matrix,
    rope_cos_sin, rope_decay_curve, rope_frequencies, rope_matrix, rope_scores, sinusoidal_gram, sinusoidal_pe,
    sinusoidal_shift_matrix, t5_relative_position_bucket, toeplitz_from_offsets,
)


def author_rope_numpy(x: np.ndarray, positions: np.ndarray, base: float = 10000.0) -> np.ndarray:
    """Line-by-line numpy transcription of the author's interleaved formula (bert4keras'
    ``apply_rotary_position_embeddings``): a sinusoidal table with sin at even and cos at odd channels, each
    repeated twice, and ``x * cos + stack([-x[1::2], x[::2]]) * sin``."""
    d = x.shape[-1]
    theta = base ** (-2 * np.arange(d // 2) / d)
    angles = positions[:, None] * theta                              # (n, d/2)
    sinusoidal = np.stack([np.sin(angles), np.cos(angles)], axis=-1).reshape(len(positions), d)
    cos_pos = np.repeat(sinusoidal[..., 1::2], 2, axis=-1)           # cos(m theta_0), cos(m theta_0), ...
    sin_pos = np.repeat(sinusoidal[..., ::2], 2, axis=-1)            # sin(m theta_0), sin(m theta_0), ...
    x2 = np.stack([-x[..., 1::2], x[..., ::2]], axis=-1).reshape(x.shape)   # (-x1, x0, -x3, x2, ...)
    return x * cos_pos + x2 * sin_pos


@pytest.mark.parametrize("layout", ["interleaved", "half"])
def test_rope_matrix_matches_kernel_both_layouts(layout):
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(7, 16, generator=gen, dtype=torch.float64)
    pos = torch.tensor([0.0, 1.0, 2.5, 17.0, 300.0, -4.0, 1e4], dtype=torch.float64)
    out = apply_rope(x, pos, layout=layout)
    dense = torch.stack([rope_matrix(float(p), 16, layout=layout) @ x[t] for t, p in enumerate(pos)])
    assert torch.allclose(out, dense, atol=1e-12, rtol=0)
    # relativity R_m^T R_n = R_{n-m}, orthogonality
    for m, n in [(3, 11), (1000, 7), (-5, 4096)]:
        lhs = rope_matrix(m, 16, layout=layout).T @ rope_matrix(n, 16, layout=layout)
        assert torch.allclose(lhs, rope_matrix(n - m, 16, layout=layout), atol=1e-11, rtol=0)


def test_layouts_agree_up_to_fixed_permutation():
    gen = torch.Generator().manual_seed(5)
    d = 32
    perm = interleaved_to_half_perm(d)
    assert perm.tolist() == list(range(0, d, 2)) + list(range(1, d, 2))
    x = torch.randn(2, 3, 11, d, generator=gen, dtype=torch.float64)
    pos = torch.arange(11) * 13
    inter = apply_rope(x, pos, layout="interleaved")
    half = apply_rope(x[..., perm], pos, layout="half")
    assert torch.allclose(half, inter[..., perm], atol=1e-13, rtol=0)
    assert torch.allclose(half[..., torch.argsort(perm)], inter, atol=1e-13, rtol=0)
    # without the permutation the two layouts differ
    assert (apply_rope(x, pos, layout="half") - inter).abs().max() > 0.1
    # dense matrices are conjugate by the permutation matrix
    p_mat = torch.eye(d, dtype=torch.float64)[perm]
    assert torch.allclose(p_mat @ rope_matrix(9, d) @ p_mat.T, rope_matrix(9, d, layout="half"), atol=1e-15)


def test_author_numpy_transcription():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((50, 64))
    pos = np.arange(50, dtype=np.float64) * 7
    ours = apply_rope(torch.from_numpy(x), torch.from_numpy(pos)).numpy()
    np.testing.assert_allclose(ours, author_rope_numpy(x, pos), atol=1e-12, rtol=0)
    # the sinusoidal table used by the author is our sinusoidal_pe (sin at 2i, cos at 2i+1)
    table = sinusoidal_pe(pos, 64).numpy()
    theta = 10000.0 ** (-2 * np.arange(32) / 64)
    np.testing.assert_allclose(table[:, 0::2], np.sin(pos[:, None] * theta), atol=1e-15)
    np.testing.assert_allclose(table[:, 1::2], np.cos(pos[:, None] * theta), atol=1e-15)


@pytest.mark.parametrize("layout", ["interleaved", "half"])
@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-13), (torch.float32, 2e-6), (torch.bfloat16, 3e-2),
                                        (torch.float16, 4e-3)])
def test_dtypes_and_cache(layout, dtype, tol):
    gen = torch.Generator().manual_seed(7)
    x64 = torch.randn(2, 4, 33, 16, generator=gen, dtype=torch.float64)
    x = x64.to(dtype)
    ref = apply_rope(x.double(), torch.arange(33), layout=layout)      # exact rotation of the rounded input
    for out in (apply_rope(x, torch.arange(33), layout=layout), apply_rope(x, layout=layout)):
        assert out.dtype == dtype and out.shape == x.shape
        assert (out.double() - ref).abs().max() <= tol * max(1.0, ref.abs().max().item())
    # the cached path equals the explicit positions exactly in float64
    if dtype == torch.float64:
        assert torch.equal(apply_rope(x, layout=layout), apply_rope(x, torch.arange(33), layout=layout))


def test_cos_sin_cache_and_angles_in_float64():
    rope_cos_sin.cache_clear()
    c1, s1 = rope_cos_sin(100, 8, dtype=torch.float32)
    c2, _ = rope_cos_sin(100, 8, dtype=torch.float32)
    assert c1 is c2 and c1.shape == (100, 4) and c1.dtype == torch.float32
    c3, _ = rope_cos_sin(100, 8, dtype=torch.float64)
    assert c3 is not c1
    # angles formed in float64: float32 output at a large position is the rounded float64 value
    big = torch.tensor([100000.0])
    out = apply_rope(torch.tensor([[1.0, 0.0]]), big)
    assert abs(out[0, 0].item() - math.cos(1e5)) < 1e-7 and abs(out[0, 1].item() - math.sin(1e5)) < 1e-7


def test_non_contiguous_input_and_float_positions():
    gen = torch.Generator().manual_seed(8)
    x = torch.randn(6, 5, 16, generator=gen, dtype=torch.float64).transpose(0, 1)   # non-contiguous (5, 6, 16)
    pos = torch.rand(6, generator=gen, dtype=torch.float64) * 40
    out = apply_rope(x, pos)
    ref = torch.stack([naive_rope(x[b], pos, rope_inv_freq(16, dtype=torch.float64)) for b in range(5)])
    assert torch.allclose(out, ref, atol=1e-13, rtol=0)
    assert torch.allclose(apply_rope(x, pos, layout="half"),
                          apply_rope(x.contiguous(), pos, layout="half"), atol=0, rtol=0)


def test_peer_rotary_embedding_torch():
    ret = pytest.importorskip("rotary_embedding_torch")
    gen = torch.Generator().manual_seed(9)
    x = torch.randn(2, 3, 10, 64, generator=gen, dtype=torch.float64)
    freqs = ret.RotaryEmbedding(dim=64).forward(torch.arange(10).float())     # (10, 64) float32 angles
    peer = ret.apply_rotary_emb(freqs, x)
    ours = apply_rope(x, torch.arange(10))
    assert (peer - ours).abs().max() < 1e-5          # the peer forms angles in float32 (~3e-7 here)
    peer2 = ret.RotaryEmbedding(dim=64).rotate_queries_or_keys(x.float())
    assert (peer2.double() - ours).abs().max() < 1e-5


def test_peer_transformers_llama_half_layout():
    pytest.importorskip("transformers")
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    gen = torch.Generator().manual_seed(10)
    d, n = 64, 10
    q = torch.randn(1, 2, n, d, generator=gen, dtype=torch.float64)
    k = torch.randn(1, 2, n, d, generator=gen, dtype=torch.float64)
    freqs = torch.arange(n, dtype=torch.float64)[:, None] * rope_frequencies(d)
    emb = torch.cat([freqs, freqs], dim=-1)[None]                                  # (1, n, d)
    hf_q, hf_k = apply_rotary_pos_emb(q, k, emb.cos(), emb.sin())
    assert torch.allclose(hf_q, apply_rope(q, torch.arange(n), layout="half"), atol=1e-13, rtol=0)
    assert torch.allclose(hf_k, apply_rope(k, layout="half"), atol=1e-13, rtol=0)


def test_rope_scores_against_naive_and_relativity():
    gen = torch.Generator().manual_seed(11)
    q = torch.randn(2, 9, 16, generator=gen, dtype=torch.float64)
    k = torch.randn(2, 13, 16, generator=gen, dtype=torch.float64)
    pq, pk = torch.arange(9) * 3, torch.arange(13) + 100
    scores = rope_scores(q, k, pq, pk, chunk_size=4)
    naive = torch.einsum("bid,bjd->bij", apply_rope(q, pq), apply_rope(k, pk))
    assert scores.shape == (2, 9, 13) and torch.allclose(scores, naive, atol=1e-12)
    shifted = rope_scores(q, k, pq + 777, pk + 777)
    assert torch.allclose(shifted, scores, atol=1e-10)
    assert torch.allclose(rope_scores(q, k, pq, pk, layout="half"),
                          torch.einsum("bid,bjd->bij", apply_rope(q, pq, layout="half"),
                                       apply_rope(k, pk, layout="half")), atol=1e-12)


def test_rope_decay_curve_against_numpy_loop():
    deltas = np.array([0, 1, 2, 5, 19, 18, 100, 256, 1e5])
    theta = 10000.0 ** (-2 * np.arange(64) / 128)
    ref = []
    for delta in deltas:
        partial, total = 0j, 0.0
        for t in theta:
            partial += np.exp(1j * delta * t)
            total += abs(partial)
        ref.append(total / 64)
    out = rope_decay_curve(deltas, 128, chunk_size=4)
    # angles up to 1e5 rad carry ~1e-11 rounding (ulp(1e5) = 1.5e-11), summed with different association orders
    np.testing.assert_allclose(out.numpy(), ref, atol=1e-10, rtol=0)
    assert out[0].item() == pytest.approx((64 + 1) / 2, abs=1e-12)
    assert rope_decay_curve(torch.arange(6).reshape(2, 3), 8).shape == (2, 3)


def test_rope_2d_blocks_relativity_and_peer():
    gen = torch.Generator().manual_seed(12)
    d = 32
    pos = axial_positions(4, 5)
    assert pos.shape == (20, 2) and pos.dtype == torch.long
    assert pos[7].tolist() == [1, 2] and pos[-1].tolist() == [3, 4]
    x = torch.randn(3, 20, d, generator=gen, dtype=torch.float64)
    out = apply_rope_2d(x, pos)
    dense = torch.stack([rope_2d_matrix(float(p[0]), float(p[1]), d) for p in pos])   # (20, d, d)
    assert torch.allclose(out, torch.einsum("tij,btj->bti", dense, x), atol=1e-13)
    q, k = torch.randn(2, d, generator=gen, dtype=torch.float64)
    a, b, s = torch.tensor([[3.0, 1.0]]), torch.tensor([[-2.0, 7.0]]), torch.tensor([[50.0, -9.0]])
    logit = apply_rope_2d(q[None], a) @ apply_rope_2d(k[None], b).T
    assert torch.allclose(apply_rope_2d(q[None], a + s) @ apply_rope_2d(k[None], b + s).T, logit, atol=1e-12)
    ret = pytest.importorskip("rotary_embedding_torch")
    freqs = ret.RotaryEmbedding(dim=d // 2, freqs_for="lang").get_axial_freqs(4, 5)       # (4, 5, d)
    peer = ret.apply_rotary_emb(freqs, x.reshape(3, 4, 5, d).float()).reshape(3, 20, d)
    assert (peer.double() - out).abs().max() < 1e-5


def test_sinusoidal_tables_shift_and_gram():
    pos = torch.arange(40, dtype=torch.float64) * 1.5
    for layout in ("sin_cos_interleaved", "cos_sin_interleaved", "sin_then_cos", "half"):
        pe = sinusoidal_pe(pos, 16, layout=layout)
        assert pe.shape == (40, 16) and pe.dtype == torch.float64
        shift = sinusoidal_shift_matrix(7.25, 16, layout=layout)
        assert torch.allclose(sinusoidal_pe(pos + 7.25, 16, layout=layout), pe @ shift.T, atol=1e-12)
        gram = pe @ pe.T
        delta = pos[None, :] - pos[:, None]
        assert torch.allclose(gram, sinusoidal_gram(delta, 16, chunk_size=100), atol=1e-12)
    assert torch.equal(sinusoidal_pe(pos, 16, layout="half"), sinusoidal_pe(pos, 16, layout="sin_then_cos"))
    assert sinusoidal_pe(3, 4, dtype=torch.float32).dtype == torch.float32


def test_t5_buckets_table_and_peer():
    buckets = t5_relative_position_bucket(-torch.arange(31))
    assert buckets.tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 8, 8, 8, 9, 9, 9, 9] + [10] * 7 + [11] * 8
    assert t5_relative_position_bucket(torch.tensor([128, 1000, 10**6])).tolist() == [31, 31, 31]
    assert t5_relative_position_bucket(np.array([-128, -10**6])).tolist() == [15, 15]
    pytest.importorskip("transformers")
    from transformers.models.t5.modeling_t5 import T5Attention
    rel = torch.arange(-1500, 1500)
    for bidirectional in (True, False):
        for num_buckets, max_distance in ((32, 128), (16, 64), (64, 256)):
            ref = T5Attention._relative_position_bucket(rel, bidirectional, num_buckets, max_distance)
            assert torch.equal(t5_relative_position_bucket(rel, bidirectional, num_buckets, max_distance), ref)


def test_relative_index_toeplitz_alibi():
    idx = relative_index(5, -2, 3)
    assert idx.shape == (5, 5) and idx.min() == 0 and idx.max() == 5
    assert idx[4, 0] == 5 and idx[0, 4] == 0 and idx[2, 2] == 2
    g = torch.arange(6, dtype=torch.float64) * 10
    c = toeplitz_from_offsets(g, 5, -2, 3)
    for i in range(5):
        for j in range(5):
            assert c[i, j] == g[min(max(i - j, -2), 3) + 2]
    assert toeplitz_from_offsets(torch.stack([g, -g]), 5, -2, 3).shape == (2, 5, 5)
    bias = alibi_bias(4, 0.5)
    assert torch.equal(bias, -0.5 * (torch.arange(4)[:, None] - torch.arange(4)[None]).abs().double())
    assert alibi_bias(4, torch.tensor([1.0, 2.0])).shape == (2, 4, 4)


def test_validation_extended():
    with pytest.raises(ValueError, match="layout"):
        apply_rope(torch.zeros(3, 8), torch.arange(3), layout="Llama")
    with pytest.raises(ValueError, match="base"):
        apply_rope(torch.zeros(3, 8), torch.arange(3), base=0.5)
    with pytest.raises(ValueError, match="finite"):
        apply_rope(torch.zeros(3, 8), torch.tensor([0.0, float("nan"), 1.0]))
    with pytest.raises(ValueError, match="positions=None"):
        apply_rope(torch.zeros(8))
    with pytest.raises(ValueError, match="even"):
        interleaved_to_half_perm(7)
    with pytest.raises(ValueError, match="multiple of 4"):
        apply_rope_2d(torch.zeros(3, 6), torch.zeros(3, 2))
    with pytest.raises(ValueError, match="pos_xy"):
        apply_rope_2d(torch.zeros(3, 8), torch.zeros(3, 3))
    with pytest.raises(ValueError, match="last dimension"):
        rope_scores(torch.zeros(3, 8), torch.zeros(3, 6), torch.arange(3), torch.arange(3))
    with pytest.raises(ValueError, match="positions_q"):
        rope_scores(torch.zeros(3, 8), torch.zeros(3, 8), torch.arange(4), torch.arange(3))
    with pytest.raises(ValueError, match="layout"):
        sinusoidal_pe(torch.arange(3), 8, layout="cos_then_sin")
    with pytest.raises(ValueError, match="d must be even"):
        sinusoidal_pe(torch.arange(3), 7)
    with pytest.raises(ValueError, match="integers"):
        t5_relative_position_bucket(torch.tensor([0.5]))
    with pytest.raises(ValueError, match="p_min"):
        relative_index(4, 3, -3)
    with pytest.raises(ValueError, match="entries"):
        toeplitz_from_offsets(torch.zeros(5), 4, -2, 3)
    with pytest.raises(ValueError, match="slope"):
        alibi_bias(4, torch.zeros(2, 2))
    with pytest.raises(ValueError, match="n must"):
        rope_cos_sin(0, 8)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("layout", ["interleaved", "half"])
def test_cuda_all_kernels(layout):
    gen = torch.Generator().manual_seed(13)
    x = torch.randn(2, 4, 64, 32, generator=gen)
    ref = apply_rope(x, layout=layout)
    out = apply_rope(x.cuda(), layout=layout)
    assert out.device.type == "cuda" and torch.allclose(out.cpu(), ref, atol=1e-5)
    assert torch.allclose(apply_rope(x.cuda().half(), layout=layout).float().cpu(), ref, atol=1e-2)
    assert torch.allclose(apply_rope_2d(x.cuda(), axial_positions(8, 8, device="cuda"), layout=layout).cpu(),
                          apply_rope_2d(x, axial_positions(8, 8), layout=layout), atol=1e-5)
    assert torch.allclose(rope_decay_curve(torch.arange(100., device="cuda"), 64).cpu(),
                          rope_decay_curve(torch.arange(100.), 64), atol=1e-10)
    assert torch.allclose(rope_scores(x[0].cuda(), x[1].cuda(), torch.arange(64), torch.arange(64)).cpu(),
                          rope_scores(x[0], x[1], torch.arange(64), torch.arange(64)), atol=1e-3)


def test_skew_generator_and_matrix_exponential_rope():
    from utils.positions import rope_from_generator, skew_generator
    b3 = skew_generator([1.0, 2.0, 3.0])
    assert torch.equal(b3, torch.tensor([[0.0, -1, -2], [1, 0, -3], [2, 3, 0]], dtype=torch.float64))
    b4 = skew_generator(torch.arange(1.0, 7.0, dtype=torch.float64))
    assert torch.equal(b4, torch.tensor([[0.0, -1, -2, -4], [1, 0, -3, -5], [2, 3, 0, -6], [4, 5, 6, 0]],
                                        dtype=torch.float64))
    # exp(n theta J) is the 2x2 rotation; relativity for a random skew generator
    rot = rope_from_generator(skew_generator([0.3]), 5.0)
    assert torch.allclose(rot, torch.tensor([[math.cos(1.5), -math.sin(1.5)], [math.sin(1.5), math.cos(1.5)]],
                                            dtype=torch.float64), atol=1e-14)
    gen = torch.Generator().manual_seed(14)
    skew = skew_generator(torch.randn(10, generator=gen, dtype=torch.float64) * 0.5)
    for m, n in [(-3, 7), (2, 2), (5, -1)]:
        lhs = rope_from_generator(skew, m).T @ rope_from_generator(skew, n)
        assert torch.allclose(lhs, rope_from_generator(skew, n - m), atol=1e-12)
    with pytest.raises(ValueError, match="n\\(n-1\\)/2"):
        skew_generator([1.0, 2.0])
    with pytest.raises(ValueError, match="square"):
        rope_from_generator(torch.zeros(2, 3), 1.0)


def test_quaternions_against_sympy_and_expm():
    scipy_linalg = pytest.importorskip("scipy.linalg")
    from sympy.algebras.quaternion import Quaternion

    from utils.positions import quaternion_exp, quaternion_left_matrix, quaternion_mul
    rng = np.random.default_rng(15)
    p, q = rng.standard_normal((2, 4))
    ref = Quaternion(*p) * Quaternion(*q)
    expected = np.array([float(ref.a), float(ref.b), float(ref.c), float(ref.d)])
    np.testing.assert_allclose(quaternion_mul(p, q), expected, atol=1e-12)
    np.testing.assert_allclose(quaternion_left_matrix(p) @ q, expected, atol=1e-12)
    assert np.abs(quaternion_mul(p, q) - quaternion_mul(q, p)).max() > 1e-3          # non-commutative
    v = rng.standard_normal(4)
    via_expm = scipy_linalg.expm(quaternion_left_matrix(v))[:, 0]                     # exp(L(v)) e_0 = exp(v)
    np.testing.assert_allclose(quaternion_exp(v), via_expm, atol=1e-12)
    np.testing.assert_allclose(quaternion_exp(np.array([0.5, 0, 0, 0])), [math.exp(0.5), 0, 0, 0], atol=1e-15)
    with pytest.raises(ValueError, match="size 4"):
        quaternion_mul(np.zeros(3), np.zeros(4))


@pytest.mark.parametrize("layout", ["interleaved", "half"])
def test_gradients_flow_through_both_kernels(layout):
    gen = torch.Generator().manual_seed(16)
    x = torch.randn(2, 5, 8, generator=gen, dtype=torch.float64, requires_grad=True)
    pos = torch.arange(5)
    assert torch.autograd.gradcheck(lambda t: apply_rope(t, pos, layout=layout), (x,))
    # the gradient of a rotation is the inverse rotation: d<w, R x>/dx = R^T w
    w = torch.randn(2, 5, 8, generator=gen, dtype=torch.float64)
    (apply_rope(x, pos, layout=layout) * w).sum().backward()
    assert torch.allclose(x.grad, apply_rope(w, -pos, layout=layout), atol=1e-13)
    xb = x.detach().to(torch.bfloat16).requires_grad_()
    apply_rope(xb, pos, layout=layout).float().sum().backward()
    assert xb.grad is not None and xb.grad.dtype == torch.bfloat16
