"""A tiny Transformer that trains in seconds on one CPU thread, with pluggable position encodings and attention
normalisations (used by the probe of ``relative-position-encoding-defect`` and the length-extrapolation demos of
``length-extrapolation-position-robustness``).

The network (pre-LN, as in most modern Transformers)::

    h = embed(tokens) [+ absolute position table]                 (batch, n, d)
    repeat n_layers times:
        h = h + W_O attention(LayerNorm(h))                        multi-head, fused W_QKV
        h = h + W_2 GELU(W_1 LayerNorm(h))                         d -> d_ff -> d
    y = head(LayerNorm(h))                                         (batch, n, out_dim)

Position encodings (``pos``): ``"none"``; ``"learned"`` (a trainable absolute table, integer positions);
``"sinusoidal"`` (Vaswani's fixed table added to the embeddings, real positions allowed); ``"rope"`` (rotary, on
queries and keys, real-valued positions allowed); ``"t5"`` (a learned per-head scalar bias ``beta_h[clip(i-j)]`` on
the logits, the simplified clipped form of T5's bias); ``"alibi"`` (``-slope_h |i-j|``, slopes
``2^(-8(h+1)/H)``). Independently of ``pos``: ``shaw_values=True`` adds Shaw et al.'s relative *value* vectors,
``o_i = sum_j a_ij (v_j + R^V[clip(i-j)])``; ``urpe=True`` multiplies the attention matrix elementwise by a trainable
Toeplitz matrix ``C_ij = g_h(clip(i-j))`` (Luo et al. 2022); ``log_scale_train_len=m`` multiplies the logits by
``log n / log m`` (log-n scaling, ``n`` = current number of keys).

Attention normalisations (``normalization``), applied to the logits ``b_ij`` (row ``i`` = query):

* ``"softmax"``: ``e^{b_ij} / sum_j e^{b_ij}`` (rows sum to 1);
* ``"l2"``: ``e^{b_ij} / sqrt(sum_j e^{2 b_ij})`` (a per-row max is subtracted first; it cancels exactly);
* ``"none"``: ``e^{b_ij}`` with no denominator and NO stabiliser (subtracting a per-row max would silently turn
  it into another normalisation, division by ``max_j e^{b_ij}``);
* ``"relu2_over_n"``: ``relu(b_ij)^2 / n`` (GAU's form; ``n`` = sequence length, the same for every row);
* ``"swish_l2"``: ``swish(b_ij) / ||swish(b_i)||_2``.

Masked entries (``causal`` or a key mask) get weight exactly 0 in every variant.

All computations follow the dtype/device of the module's parameters (``model.to(...)``). Tiny models are much
faster on ONE thread: the helpers below run with ``torch.set_num_threads(1)`` temporarily (``num_threads``
argument); multi-threading made a 16-token model ~100x slower on a loaded 2-core machine.
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from ._validation import as_float_tensor, positive_int
from .positions import alibi_bias, apply_rope, relative_index, rope_inv_freq, sinusoidal_pe, toeplitz_from_offsets

__all__ = ["NORMALIZATIONS", "POSITION_ENCODINGS", "normalize_logits", "relative_attention", "alibi_slopes",
           "TinyTransformer", "single_thread", "train_model", "probe_batch", "train_probe", "output_spread",
           "attention_row_sums"]

NORMALIZATIONS = ("softmax", "l2", "none", "relu2_over_n", "swish_l2")
POSITION_ENCODINGS = ("none", "learned", "sinusoidal", "rope", "t5", "alibi")


def normalize_logits(logits: torch.Tensor, normalization: str = "softmax",
                     mask: torch.Tensor | None = None) -> torch.Tensor:
    """Turn attention logits into attention weights.

    Args:
        logits: ``(..., n_q, n_k)`` float tensor ``b_ij``.
        normalization: one of :data:`NORMALIZATIONS` (see the module docstring).
        mask: optional boolean ``(..., n_q, n_k)`` (broadcastable), ``True`` = the key is visible. Invisible
            entries get weight 0; a row must keep at least one visible key.

    Returns:
        ``(..., n_q, n_k)`` weights, same dtype/device as ``logits``.
    """
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
    if not isinstance(logits, torch.Tensor) or not logits.is_floating_point() or logits.ndim < 2:
        raise ValueError("logits must be a floating tensor of shape (..., n_q, n_k)")
    if mask is not None:
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
            raise ValueError("mask must be a boolean tensor (True = visible)")
        try:
            torch.broadcast_shapes(mask.shape, logits.shape)
        except RuntimeError:
            raise ValueError(f"mask of shape {tuple(mask.shape)} does not broadcast to the logits "
                             f"{tuple(logits.shape)}") from None
    n_k = logits.shape[-1]
    if normalization == "softmax":
        if mask is not None:
            logits = logits.masked_fill(~mask, float("-inf"))
        return torch.softmax(logits, dim=-1)
    if normalization == "l2":
        if mask is not None:
            logits = logits.masked_fill(~mask, float("-inf"))
        shifted = logits - logits.amax(dim=-1, keepdim=True).detach()   # cancels in the ratio below
        e = torch.exp(shifted)
        return e / e.norm(dim=-1, keepdim=True)
    if normalization == "none":
        weights = torch.exp(logits)                                     # deliberately no stabiliser
    elif normalization == "relu2_over_n":
        weights = torch.relu(logits) ** 2 / n_k
    else:  # swish_l2
        s = logits * torch.sigmoid(logits)
        if mask is not None:
            s = s.masked_fill(~mask, 0.0)
        return s / s.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(s.dtype).tiny)
    if mask is not None:
        weights = weights.masked_fill(~mask, 0.0)
    return weights


def relative_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, bias: torch.Tensor | None = None,
                       mask: torch.Tensor | None = None, normalization: str = "softmax",
                       hadamard: torch.Tensor | None = None, value_bias: torch.Tensor | None = None,
                       scale: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention with optional relative-position parts: ``o_i = sum_j a_ij c_ij (v_j + r_ij)``.

    Args:
        q, k: ``(..., n_q, d)`` and ``(..., n_k, d)``; v: ``(..., n_k, d_v)`` (leading dims broadcast).
        bias: additive logit term, broadcastable to ``(..., n_q, n_k)`` (T5 bias, ALiBi, ...).
        mask: boolean, ``True`` = visible (see :func:`normalize_logits`).
        normalization: one of :data:`NORMALIZATIONS`.
        hadamard: multiplicative ``C`` (URPE), broadcastable to ``(..., n_q, n_k)``, applied AFTER normalising.
        value_bias: Shaw's relative value vectors ``r_ij`` of shape ``(n_q, n_k, d_v)`` (shared by the heads).
        scale: logit factor (default ``1/sqrt(d)``).

    Returns:
        ``(out, A)``: ``out`` of shape ``(..., n_q, d_v)`` and the weights ``A`` (after the Hadamard factor) of
        shape ``(..., n_q, n_k)``; dtype/device of ``q``.
    """
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor) or not t.is_floating_point() or t.ndim < 2:
            raise ValueError(f"{name} must be a floating tensor with at least 2 dimensions")
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"q and k must have the same last dimension, got {q.shape[-1]} and {k.shape[-1]}")
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(f"k and v must have the same length (dim -2), got {k.shape[-2]} and {v.shape[-2]}")
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    logits = torch.matmul(q, k.transpose(-1, -2)) * scale                # (..., n_q, n_k)
    if bias is not None:
        logits = logits + bias
    attn = normalize_logits(logits, normalization, mask)
    if hadamard is not None:
        attn = attn * hadamard
    out = torch.matmul(attn, v)                                          # (..., n_q, d_v)
    if value_bias is not None:
        expected = (q.shape[-2], k.shape[-2], v.shape[-1])
        if tuple(value_bias.shape) != expected:
            raise ValueError(f"value_bias must have shape (n_q, n_k, d_v) = {expected}, got "
                             f"{tuple(value_bias.shape)}")
        out = out + torch.einsum("...ij,ijd->...id", attn, value_bias)
    return out, attn


def alibi_slopes(n_heads: int) -> torch.Tensor:
    """ALiBi's head slopes ``2^(-8 (h+1) / H)``, ``h = 0..H-1`` (float64, shape ``(H,)``)."""
    n_heads = positive_int(n_heads, "n_heads")
    return 2.0 ** (-8.0 * torch.arange(1, n_heads + 1, dtype=torch.float64) / n_heads)


class _Block(nn.Module):
    def __init__(self, d_model: int, n_heads: int, d_ff: int) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.ln2 = nn.LayerNorm(d_model)
        self.ff1 = nn.Linear(d_model, d_ff)
        self.ff2 = nn.Linear(d_ff, d_model)


class TinyTransformer(nn.Module):
    """A pre-LN Transformer encoder with a per-position linear head (see the module docstring).

    Args:
        vocab_size: number of token ids (>= 1).
        d_model: width (divisible by ``n_heads``; the head size must be even for RoPE).
        n_heads, n_layers: heads per layer and number of blocks.
        d_ff: hidden width of the GELU feed-forward (default ``4 d_model``).
        out_dim: outputs per position (1 for regression, the number of classes for classification).
        pos: one of :data:`POSITION_ENCODINGS`.
        normalization: one of :data:`NORMALIZATIONS`.
        causal: mask keys ``j > i``.
        rope_base: RoPE/sinusoidal base.
        max_rel: clipping range ``[-max_rel, max_rel]`` of the T5 bias table and of the URPE Toeplitz factor.
        t5_init_std: std of the N(0, std^2) init of the T5 table (0 would make the probe test vacuous).
        shaw_values, shaw_max_rel, shaw_init_std: Shaw's relative value table ``R^V`` of shape
            ``(2 shaw_max_rel + 1, head_dim)`` shared by the heads, init ``shaw_init_std * N(0, 1)``.
        urpe: multiply the attention matrix by a trainable Toeplitz ``C`` per head, ``g_h`` init ``0.5 + U(0, 1)``.
        max_len: size of the learned absolute table (``pos="learned"``).
        log_scale_train_len: ``m`` > 1 turns on log-n scaling of the logits by ``log n_k / log m``.
        seed: if given, the parameters are initialised under ``torch.manual_seed(seed)`` inside a
            ``torch.random.fork_rng`` block (the global torch RNG is left untouched).

    ``forward(tokens, positions=None, key_mask=None, return_attention=False)``: ``tokens`` long ``(batch, n)``;
    ``positions`` ``(n,)`` or ``(batch, n)``, integers or (for RoPE/sinusoidal) reals, default ``arange(n)``;
    returns ``(batch, n, out_dim)`` (and the list of per-layer attention matrices ``(batch, H, n, n)``).
    The Toeplitz/T5/Shaw tables are indexed by ``i - j`` in the sequence (not by ``positions``).
    """

    def __init__(self, vocab_size: int, d_model: int = 32, n_heads: int = 4, n_layers: int = 2,
                 d_ff: int | None = None, out_dim: int = 1, *, pos: str = "rope", normalization: str = "softmax",
                 causal: bool = False, rope_base: float = 10000.0, max_rel: int = 8, t5_init_std: float = 1.0,
                 shaw_values: bool = False, shaw_max_rel: int = 4, shaw_init_std: float = 0.5, urpe: bool = False,
                 max_len: int = 512, log_scale_train_len: float | None = None, seed: int | None = None) -> None:
        super().__init__()
        vocab_size = positive_int(vocab_size, "vocab_size")
        d_model = positive_int(d_model, "d_model")
        n_heads = positive_int(n_heads, "n_heads")
        n_layers = positive_int(n_layers, "n_layers")
        out_dim = positive_int(out_dim, "out_dim")
        d_ff = 4 * d_model if d_ff is None else positive_int(d_ff, "d_ff")
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} must be divisible by n_heads={n_heads}")
        if pos not in POSITION_ENCODINGS:
            raise ValueError(f"pos must be one of {POSITION_ENCODINGS}, got {pos!r}")
        if normalization not in NORMALIZATIONS:
            raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
        head_dim = d_model // n_heads
        if pos == "rope" and head_dim % 2:
            raise ValueError(f"RoPE needs an even head size, got {head_dim}")
        if pos == "sinusoidal" and d_model % 2:
            raise ValueError(f"sinusoidal encodings need an even d_model, got {d_model}")
        if log_scale_train_len is not None and not float(log_scale_train_len) > 1.0:
            raise ValueError(f"log_scale_train_len must be > 1, got {log_scale_train_len}")
        self.max_rel = positive_int(max_rel, "max_rel")
        self.shaw_max_rel = positive_int(shaw_max_rel, "shaw_max_rel")
        self.max_len = positive_int(max_len, "max_len")
        self.d_model, self.n_heads, self.head_dim = d_model, n_heads, head_dim
        self.pos, self.normalization, self.causal = pos, normalization, bool(causal)
        self.rope_base = float(rope_base)
        self.log_scale_train_len = None if log_scale_train_len is None else float(log_scale_train_len)
        rng_context = torch.random.fork_rng(devices=[]) if seed is not None else contextlib.nullcontext()
        with rng_context:
            if seed is not None:
                torch.manual_seed(int(seed))
            self.embed = nn.Embedding(vocab_size, d_model)
            self.pos_table = nn.Embedding(self.max_len, d_model) if pos == "learned" else None
            self.blocks = nn.ModuleList(_Block(d_model, n_heads, d_ff) for _ in range(n_layers))
            self.ln_f = nn.LayerNorm(d_model)
            self.head = nn.Linear(d_model, out_dim)
            self.t5_table = (nn.Parameter(t5_init_std * torch.randn(n_layers, n_heads, 2 * self.max_rel + 1))
                             if pos == "t5" else None)
            self.shaw_table = (nn.Parameter(shaw_init_std * torch.randn(n_layers, 2 * self.shaw_max_rel + 1,
                                                                        head_dim)) if shaw_values else None)
            self.urpe_g = (nn.Parameter(0.5 + torch.rand(n_layers, n_heads, 2 * self.max_rel + 1))
                           if urpe else None)
        self.register_buffer("inv_freq", rope_inv_freq(head_dim, self.rope_base, dtype=torch.float64)
                             if pos == "rope" else torch.empty(0), persistent=False)
        self.register_buffer("slopes", alibi_slopes(n_heads), persistent=False)

    def _positions(self, positions: Any, batch: int, n: int, device: torch.device) -> torch.Tensor:
        if positions is None:
            return torch.arange(n, device=device, dtype=torch.float64).expand(batch, n)
        positions = as_float_tensor(positions, "positions").to(device)
        if positions.ndim == 1:
            positions = positions.expand(batch, -1)
        if positions.shape != (batch, n):
            raise ValueError(f"positions must have shape (n,) or (batch, n) = ({batch}, {n}), "
                             f"got {tuple(positions.shape)}")
        return positions

    def forward(self, tokens: torch.Tensor, positions: Any = None, key_mask: torch.Tensor | None = None,
                return_attention: bool = False) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        if not isinstance(tokens, torch.Tensor) or tokens.dtype not in (torch.int64, torch.int32) or tokens.ndim != 2:
            raise ValueError("tokens must be an integer tensor of shape (batch, n)")
        batch, n = tokens.shape
        dev = self.head.weight.device
        dtype = self.head.weight.dtype
        tokens = tokens.to(dev)
        pos = self._positions(positions, batch, n, dev)                    # (batch, n) float64
        h = self.embed(tokens)                                             # (batch, n, d)
        if self.pos == "learned":
            if (pos != pos.round()).any() or pos.min() < 0 or pos.max() >= self.max_len:
                raise ValueError(f"learned positions must be integers in [0, {self.max_len})")
            h = h + self.pos_table(pos.long())
        elif self.pos == "sinusoidal":
            h = h + sinusoidal_pe(pos, self.d_model, base=self.rope_base).to(dtype)
        mask = None
        if self.causal:
            mask = torch.ones(n, n, dtype=torch.bool, device=dev).tril()
        if key_mask is not None:
            if key_mask.dtype != torch.bool or key_mask.shape != (batch, n):
                raise ValueError("key_mask must be a boolean tensor of shape (batch, n)")
            km = key_mask[:, None, None, :]                                # (batch, 1, 1, n)
            mask = km if mask is None else (mask & km)
        shaw_rel = (relative_index(n, -self.shaw_max_rel, self.shaw_max_rel, device=dev)
                    if self.shaw_table is not None else None)                # (n, n) indices into R^V
        if self.pos == "alibi":
            alibi = alibi_bias(n, self.slopes).to(device=dev, dtype=dtype)  # (H, n, n)
        scale = 1.0 / math.sqrt(self.head_dim)
        if self.log_scale_train_len is not None:
            scale *= math.log(n) / math.log(self.log_scale_train_len)
        attentions = []
        for layer, block in enumerate(self.blocks):
            x = block.ln1(h)
            q, k, v = block.qkv(x).view(batch, n, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)
            if self.pos == "rope":                                          # q, k: (batch, H, n, head_dim)
                qk = apply_rope(torch.stack((q, k)), pos[:, None, :], self.inv_freq.to(dtype))
                q, k = qk[0], qk[1]                                         # one call: less Python overhead
            bias = None
            if self.pos == "t5":
                bias = toeplitz_from_offsets(self.t5_table[layer], n, -self.max_rel, self.max_rel)  # (H, n, n)
            elif self.pos == "alibi":
                bias = alibi                                               # (H, n, n)
            hadamard = (toeplitz_from_offsets(self.urpe_g[layer], n, -self.max_rel, self.max_rel)
                        if self.urpe_g is not None else None)               # URPE's C: (H, n, n)
            value_bias = self.shaw_table[layer][shaw_rel] if self.shaw_table is not None else None
            out, attn = relative_attention(q, k, v, bias=bias, mask=mask, normalization=self.normalization,
                                           hadamard=hadamard, value_bias=value_bias, scale=scale)
            attentions.append(attn)
            h = h + block.proj(out.transpose(1, 2).reshape(batch, n, self.d_model))
            h = h + block.ff2(torch.nn.functional.gelu(block.ff1(block.ln2(h))))
        y = self.head(self.ln_f(h))
        return (y, attentions) if return_attention else y


@contextlib.contextmanager
def single_thread(num_threads: int | None = 1) -> Iterator[None]:
    """Temporarily set ``torch.set_num_threads(num_threads)`` (``None``: leave it alone)."""
    if num_threads is None:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(positive_int(num_threads, "num_threads"))
    try:
        yield
    finally:
        torch.set_num_threads(old)


def train_model(model: nn.Module, make_batch: Callable[[int], tuple], loss_fn: Callable[..., torch.Tensor], *,
                steps: int = 400, lr: float = 3e-3, num_threads: int | None = 1,
                callback: Callable[[int, float], None] | None = None) -> list[float]:
    """Adam training loop (default betas). Returns the loss history (one float per step, before the update).

    Args:
        model: the module (its parameters are updated in place).
        make_batch: ``make_batch(step) -> (args, target)``: ``model(*args)`` is compared with ``target``.
        loss_fn: ``loss_fn(output, target) -> scalar``.
        steps: number of optimisation steps (>= 1); lr: Adam's learning rate (> 0).
        num_threads: torch threads during training (1 is fastest for tiny models; None leaves it).
        callback: called as ``callback(step, loss)`` after every step (e.g. a tqdm update).
    """
    steps = positive_int(steps, "steps")
    if not float(lr) > 0:
        raise ValueError(f"lr must be positive, got {lr}")
    opt = torch.optim.Adam(model.parameters(), lr=float(lr), foreach=True)
    history = []
    model.train()
    with single_thread(num_threads):
        for step in range(steps):
            args, target = make_batch(step)
            loss = loss_fn(model(*args), target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            history.append(float(loss.detach()))
            if callback is not None:
                callback(step, history[-1])
    model.eval()
    return history


def probe_batch(n: int, special_tokens: bool = False) -> tuple[torch.Tensor, torch.Tensor, slice]:
    """The probe of the defect chapter: ``n`` copies of token 0 with target ``[1, ..., n]``.

    With ``special_tokens`` the input is ``[1] + n x [0] + [2]`` (token 1 = [CLS], token 2 = [SEP]).

    Returns:
        ``(tokens (1, n or n + 2) long, target (n,) float32, sl)`` where ``sl`` selects the probe positions.
    """
    n = positive_int(n, "n", minimum=2)
    body = torch.zeros(n, dtype=torch.long)
    if special_tokens:
        tokens = torch.cat([torch.tensor([1]), body, torch.tensor([2])])[None]
        sl = slice(1, n + 1)
    else:
        tokens, sl = body[None], slice(0, n)
    return tokens, torch.arange(1, n + 1, dtype=torch.float32), sl


def output_spread(model: nn.Module, n: int, special_tokens: bool = False) -> float:
    """``max_i y_i - min_i y_i`` of the model's scalar outputs on the probe positions (no gradients)."""
    tokens, _, sl = probe_batch(n, special_tokens)
    with torch.no_grad():
        y = model(tokens)[0, sl, 0]
    return float(y.max() - y.min())  # on the model's device (CUDA if it lives there)


def train_probe(model: nn.Module, n: int = 16, special_tokens: bool = False, *, steps: int = 400,
                lr: float = 3e-3, num_threads: int | None = 1) -> dict[str, Any]:
    """Train ``model`` (``out_dim=1``, vocab >= 3 with special tokens) on the probe by full-batch Adam (MSE).

    Returns:
        dict with ``spread_init``, ``spread_final`` (see :func:`output_spread`), ``history`` (MSE per step),
        ``mse_final`` (MSE after the last update), ``mse_min`` (min over the history and the final value) and
        ``outputs`` (final outputs on the probe positions, numpy float array of shape ``(n,)``).
    """
    tokens, target, sl = probe_batch(n, special_tokens)
    spread_init = output_spread(model, n, special_tokens)

    def loss_fn(y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return torch.mean((y[0, sl, 0] - t.to(y.device)) ** 2)

    history = train_model(model, lambda step: ((tokens,), target), loss_fn, steps=steps, lr=lr,
                          num_threads=num_threads)
    with torch.no_grad():
        y = model(tokens)[0, sl, 0].cpu()
    mse_final = float(torch.mean((y - target) ** 2))
    return dict(spread_init=spread_init, spread_final=float(y.max() - y.min()), history=history,
                mse_final=mse_final, mse_min=min(min(history), mse_final), outputs=y.numpy().astype(float))


def attention_row_sums(model: TinyTransformer, tokens: torch.Tensor, layer: int = 0,
                       positions: Any = None) -> torch.Tensor:
    """Row sums ``sum_j a_ij`` of the attention matrices of ``layer``: shape ``(batch, H, n)`` (no gradients)."""
    if not isinstance(model, TinyTransformer):
        raise ValueError("model must be a TinyTransformer")
    if not 0 <= layer < len(model.blocks):
        raise ValueError(f"layer must lie in [0, {len(model.blocks)}), got {layer}")
    with torch.no_grad():
        _, attns = model(tokens, positions, return_attention=True)
    return attns[layer].sum(dim=-1)
