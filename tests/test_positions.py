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
        apply_rope(torch.zeros(3, 8), torch.arange(3), layout="half")
    with pytest.raises(ValueError, match="real"):
        apply_rope(torch.zeros(3, 8, dtype=torch.complex64), torch.arange(3))
