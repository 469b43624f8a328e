"""Lossless enlargement of Transformer weights ("repeat and divide by sqrt(k)"), after kexue.fm/archives/8444.

A small model of width ``d`` is turned into a model of width ``k d`` that computes the same function up to the
isometric embedding ``S_k``: every coordinate is repeated ``k`` times consecutively (interleaved, ``[x1, x1, x2, x2,
...]`` for ``k = 2``) and divided by ``sqrt(k)``, i.e. ``S_k = I_d (x) 1_k / sqrt(k)`` with ``S_k^T S_k = I_d``.

Conventions:

* Weights follow torch: a linear layer stores ``weight`` of shape ``(out_features, in_features)`` and computes
  ``y = x @ weight.T + bias``. (The article writes ``w_ij`` with ``i`` the input index: the transpose.)
* A *mode* says how an enlarged vector relates to the original one: ``"rep_div_sqrtk"`` means ``S_k v`` (repeat,
  divide by ``sqrt(k)``), ``"rep"`` means plain repetition ``v (x) 1_k``.
* ``group`` repeats blocks of ``group`` consecutive coordinates instead of single ones (``group = 2`` gives
  ``[x1, x2, x1, x2, x3, x4, x3, x4, ...]``, the "pairwise" repetition for RoPE); ``group`` equal to the whole size
  gives *tiling* ``[x1 .. xd, x1 .. xd]``, which breaks multi-head attention (kept for demonstrations).
* Everything is plain tensor arithmetic: dtype and device (CPU or CUDA) follow the inputs.

The toy BERT (``toy_bert_params``, ``toy_bert_forward``) is a functional Post-LN BERT whose parameter names are
those of Hugging Face's ``BertForMaskedLM`` without the ``bert.`` prefix, so ``enlarge_bert_state_dict`` applies to
it and to a real ``BertModel`` alike.
"""
from __future__ import annotations

import math
import re
from typing import Any, Mapping

import torch
import torch.nn.functional as F

from ._validation import as_float_tensor, finite_float, positive_int

__all__ = ["SCALE_MODES", "HOMOGENEOUS_ACTIVATIONS", "repeat_scale", "enlarge_linear", "enlarge_layernorm",
           "enlarge_embedding", "enlarge_bert_state_dict", "enlarge_bert_config", "toy_bert_params",
           "toy_bert_forward"]

SCALE_MODES = ("rep_div_sqrtk", "rep")
HOMOGENEOUS_ACTIVATIONS = ("relu", "leaky_relu", "identity", "linear")  # A(c x) = c A(x) for c > 0
_OTHER_ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "silu", "swish", "tanh")
_LAYOUTS = ("interleave", "tile")


def _mode_factor(mode: str, k: int, name: str) -> float:
    if mode not in SCALE_MODES:
        raise ValueError(f"{name} must be one of {SCALE_MODES}, got {mode!r}")
    return 1.0 / math.sqrt(k) if mode == "rep_div_sqrtk" else 1.0


def repeat_scale(x: Any, k: int, dim: int = -1, *, group: int = 1, mode: str = "rep_div_sqrtk") -> torch.Tensor:
    """Interleaved repetition of blocks of ``group`` coordinates along ``dim``, each block ``k`` times.

    ``repeat_scale(x, k)`` is ``S_k x = x.repeat_interleave(k, dim) / sqrt(k)``.

    Args:
        x: tensor (or numpy array) of any shape; the size ``n`` of ``dim`` must be a multiple of ``group``.
        k: enlargement factor (>= 1).
        dim: the dimension to enlarge.
        group: block size (1: ``[x1, x1, x2, x2]``; 2: ``[x1, x2, x1, x2, ...]``; ``n``: tiling).
        mode: ``"rep_div_sqrtk"`` (divide by ``sqrt(k)``, norm-preserving) or ``"rep"`` (plain repetition).

    Returns:
        Tensor with size ``k n`` along ``dim``; dtype and device of ``x``.
    """
    x = as_float_tensor(x, "x", min_ndim=1)
    k = positive_int(k, "k")
    group = positive_int(group, "group")
    factor = _mode_factor(mode, k, "mode")
    if not -x.ndim <= dim < x.ndim:
        raise ValueError(f"dim {dim} out of range for a tensor with {x.ndim} dimension(s)")
    dim = dim % x.ndim
    size = x.shape[dim]
    if size % group:
        raise ValueError(f"group {group} must divide the size {size} of dimension {dim}")
    blocks = x.reshape(*x.shape[:dim], size // group, 1, group, *x.shape[dim + 1:])   # (..., n/g, 1, g, ...)
    repeated = blocks.expand(*x.shape[:dim], size // group, k, group, *x.shape[dim + 1:])  # (..., n/g, k, g, ...)
    out = repeated.reshape(*x.shape[:dim], k * size, *x.shape[dim + 1:])
    return out * factor if factor != 1.0 else out.clone()


def enlarge_linear(weight: Any, bias: Any, k: int, *, in_scale: str, out_scale: str, extra: float = 1.0,
                   group: int = 1, in_group: int = 1) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Weights of the enlarged linear layer ``y = x W^T + b`` (torch convention, ``W`` of shape ``(out, in)``).

    If the enlarged input is ``x~ = c_in rep(x)`` (``in_scale``) and the enlarged output must be
    ``y~ = extra * c_out rep(y)`` (``out_scale``), with ``c = 1/sqrt(k)`` for ``"rep_div_sqrtk"`` and ``c = 1`` for
    ``"rep"``, then ``W~ = extra * c_out / (k c_in) * rep(W)`` (each entry repeated as a ``k x k`` block; the factor
    ``1/k`` undoes the ``k``-fold sum over the copies of each input) and ``b~ = extra * c_out * rep(b)``. Special
    cases: C4 (``S -> S``: ``W/k``, ``b/sqrt(k)``), the first GeLU layer (``S -> rep``: ``W/sqrt(k)``, ``b``), the
    second (``rep -> S``: ``W/(k sqrt(k))``, ``b/sqrt(k)``), and queries/keys (``S -> S`` with ``extra = k**0.25``).

    Args:
        weight: ``(out, in)`` tensor.
        bias: ``(out,)`` tensor or ``None``.
        k: enlargement factor (>= 1).
        in_scale, out_scale: ``"rep_div_sqrtk"`` or ``"rep"``.
        extra: an additional finite factor on the output (weight and bias).
        group: block size of the repetition of the output features (2: pairwise, for RoPE; ``out``: tiling).
        in_group: block size of the repetition of the input features (``in``: tiling).

    Returns:
        ``(weight~ of shape (k out, k in), bias~ of shape (k out,) or None)``, dtype/device of ``weight``.
    """
    weight = as_float_tensor(weight, "weight", ndim=2)
    k = positive_int(k, "k")
    c_in = _mode_factor(in_scale, k, "in_scale")
    c_out = _mode_factor(out_scale, k, "out_scale")
    extra = finite_float(extra, "extra")
    new_weight = repeat_scale(repeat_scale(weight, k, 0, group=group, mode="rep"), k, 1, group=in_group, mode="rep")
    new_weight = new_weight * (extra * c_out / (k * c_in))
    if bias is None:
        return new_weight, None
    bias = as_float_tensor(bias, "bias", ndim=1)
    if bias.shape[0] != weight.shape[0]:
        raise ValueError(f"bias has {bias.shape[0]} entries but weight has {weight.shape[0]} output features")
    return new_weight, repeat_scale(bias, k, 0, group=group, mode="rep") * (extra * c_out)


def enlarge_layernorm(weight: Any, bias: Any, k: int, *, group: int = 1) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(S_k gamma, S_k beta)`` for a LayerNorm (or RMSNorm, ``bias=None``) of width ``d``.

    Whether the input of the enlarged norm is ``S_k x`` or a plain repetition of ``x``, the normalised vector is a
    plain repetition of the original one (normalisation removes the input scale), so multiplying by ``S_k gamma``
    and adding ``S_k beta`` gives ``S_k LN(x)``. Exactly so only if the caller also adapts ``eps``: an input
    ``S_k x`` has variance ``sigma^2 / k`` and needs ``eps / k``; a plain repetition keeps ``eps``.

    Returns:
        ``(gamma~ of shape (k d,), beta~ of shape (k d,) or None)``.
    """
    weight = as_float_tensor(weight, "weight", ndim=1)
    new_bias = None
    if bias is not None:
        bias = as_float_tensor(bias, "bias", ndim=1)
        if bias.shape != weight.shape:
            raise ValueError(f"bias shape {tuple(bias.shape)} differs from weight shape {tuple(weight.shape)}")
        new_bias = repeat_scale(bias, k, 0, group=group)
    return repeat_scale(weight, k, 0, group=group), new_bias


def enlarge_embedding(weight: Any, k: int, *, group: int = 1) -> torch.Tensor:
    """``S_k`` applied to every row of an embedding table ``(num_embeddings, d) -> (num_embeddings, k d)``."""
    weight = as_float_tensor(weight, "weight", ndim=2)
    return repeat_scale(weight, k, 1, group=group)


_LAYER_KEY = re.compile(r"encoder\.layer\.\d+\.(.+)$")


def enlarge_bert_state_dict(state_dict: Mapping[str, Any], k: int, *, attn_scaled: bool = True, act: str = "gelu",
                            layout: str = "interleave") -> dict[str, torch.Tensor]:
    """Apply the (corrected) BERT enlargement table to a Hugging Face ``BertModel``/``BertForMaskedLM`` state dict.

    The table, with ``S = S_k`` and "rep" = repeat every index ``k`` times:

    ========================================== ================================================================
    embeddings (word, position, token type)     ``S`` on the hidden axis
    every LayerNorm gamma, beta                 ``S``  (caller: ``eps / k`` where the input is ``S x``, see
                                                :func:`enlarge_bert_config`)
    attention query, key                        ``S -> S`` times ``k**0.25`` (weights ``k**0.25 / k``, biases
                                                ``k**0.25 / sqrt(k)``) if ``attn_scaled`` (the ``1/sqrt(head)``
                                                scale), else plain ``S -> S``
    attention value, attention output dense     ``S -> S``: weights ``/k``, biases ``/sqrt(k)``
    FFN, homogeneous ``act`` (ReLU)             both layers ``S -> S``
    FFN, other ``act`` (GeLU, ...)              intermediate ``S -> rep``: ``W/sqrt(k)``, ``b`` repeated;
                                                output ``rep -> S``: ``W/(k sqrt(k))``, ``b/sqrt(k)`` (the
                                                article's ``b/k`` is wrong unless ``b = 0``)
    MLM head transform dense                    ``S -> rep`` (exact for any activation); its LayerNorm: ``S``
                                                with ``eps`` unchanged; decoder tied to the word embeddings:
                                                ``S``; vocabulary biases unchanged
    pooler dense (tanh)                         ``S -> rep``: the pooled output becomes a plain repetition
    ========================================== ================================================================

    Keys may carry a prefix (``bert.``); integer buffers (``position_ids``) are copied. Unknown keys raise.

    Args:
        state_dict: name -> tensor (float tensors are transformed in their dtype/device).
        k: enlargement factor (>= 1); the number of heads stays, the head size becomes ``k`` times larger.
        attn_scaled: whether attention logits are divided by ``sqrt(head size)`` (BERT: True; T5: False).
        act: the FFN activation name (``HOMOGENEOUS_ACTIVATIONS`` use the simple rule, the others the GeLU rule).
        layout: ``"interleave"`` (lossless) or ``"tile"`` (every hidden/intermediate axis tiled: breaks multi-head
            attention; for demonstrations).

    Returns:
        A new state dict with the enlarged tensors.
    """
    k = positive_int(k, "k")
    if not isinstance(act, str) or act not in HOMOGENEOUS_ACTIVATIONS + _OTHER_ACTIVATIONS:
        raise ValueError(f"act must be one of {HOMOGENEOUS_ACTIVATIONS + _OTHER_ACTIVATIONS}, got {act!r}")
    if layout not in _LAYOUTS:
        raise ValueError(f"layout must be one of {_LAYOUTS}, got {layout!r}")
    if not isinstance(state_dict, Mapping) or not state_dict:
        raise ValueError("state_dict must be a non-empty mapping of names to tensors")
    homogeneous = act in HOMOGENEOUS_ACTIVATIONS
    qk_extra = k ** 0.25 if attn_scaled else 1.0
    tile = layout == "tile"

    def linear(prefix: str, in_scale: str, out_scale: str, extra: float = 1.0) -> None:
        weight = state_dict[prefix + "weight"]
        out_features, in_features = weight.shape
        new_w, new_b = enlarge_linear(weight, state_dict.get(prefix + "bias"), k, in_scale=in_scale,
                                      out_scale=out_scale, extra=extra, group=out_features if tile else 1,
                                      in_group=in_features if tile else 1)
        result[prefix + "weight"] = new_w
        if new_b is not None:
            result[prefix + "bias"] = new_b

    def vector(name: str, dim: int = -1) -> torch.Tensor:
        value = as_float_tensor(state_dict[name], name)
        return repeat_scale(value, k, dim, group=value.shape[dim] if tile else 1)

    result: dict[str, torch.Tensor] = {}
    for name, value in state_dict.items():
        if name in result:
            continue
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"state_dict[{name!r}] is not a tensor")
        if not value.is_floating_point():  # position_ids / token_type_ids buffers
            result[name] = value.clone()
            continue
        prefix, _, leaf = name.rpartition(".")
        prefix += "."
        layer_part = _LAYER_KEY.search(prefix[:-1])
        sub = layer_part.group(1) + "." if layer_part else None
        if re.search(r"embeddings\.(word|position|token_type)_embeddings\.$", prefix) \
                or name.endswith("cls.predictions.decoder.weight"):
            result[name] = vector(name, dim=1)
        elif prefix.endswith("LayerNorm."):
            result[name] = vector(name)
        elif name.endswith(("cls.predictions.bias", "cls.predictions.decoder.bias")):
            result[name] = value.clone()
        elif prefix.endswith(("cls.predictions.transform.dense.", "pooler.dense.")):
            linear(prefix, "rep_div_sqrtk", "rep")
        elif sub in ("attention.self.query.", "attention.self.key."):
            linear(prefix, "rep_div_sqrtk", "rep_div_sqrtk", extra=qk_extra)
        elif sub in ("attention.self.value.", "attention.output.dense."):
            linear(prefix, "rep_div_sqrtk", "rep_div_sqrtk")
        elif sub == "intermediate.dense.":
            linear(prefix, "rep_div_sqrtk", "rep_div_sqrtk" if homogeneous else "rep")
        elif sub == "output.dense.":
            linear(prefix, "rep_div_sqrtk" if homogeneous else "rep", "rep_div_sqrtk")
        else:
            raise ValueError(f"don't know how to enlarge the BERT parameter {name!r}")
    return result


def enlarge_bert_config(config: Any, k: int) -> dict:
    """The configuration of the enlarged BERT: hidden and intermediate sizes times ``k``, ``layer_norm_eps / k``.

    ``config`` is a dict or a ``transformers`` config (anything with ``to_dict()``); other fields are copied, the
    number of heads is kept. Note: Hugging Face's MLM head LayerNorm also reads ``layer_norm_eps``, although its
    input is a plain repetition (exact with the original ``eps``); the mismatch is of the order of ``eps``.
    """
    k = positive_int(k, "k")
    fields = dict(config.to_dict() if hasattr(config, "to_dict") else config)
    for key in ("hidden_size", "intermediate_size", "layer_norm_eps"):
        if key not in fields:
            raise ValueError(f"config lacks the field {key!r}")
    fields["hidden_size"] = fields["hidden_size"] * k
    fields["intermediate_size"] = fields["intermediate_size"] * k
    fields["layer_norm_eps"] = fields["layer_norm_eps"] / k
    return fields


def toy_bert_params(vocab_size: int, hidden: int, heads: int, intermediate: int, layers: int, max_positions: int, *,
                    generator: torch.Generator | None = None, std: float = 0.5, norm: str = "layer",
                    mlm_head: bool = True, dtype: torch.dtype = torch.float64,
                    device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
    """Random parameters of a toy Post-LN BERT with Hugging Face ``BertForMaskedLM`` names (no ``bert.`` prefix).

    Every weight and bias is ``N(0, std^2)``; norm gains are ``1 + N(0, std^2)``. Token and position embeddings (no
    token types). ``norm="rms"`` gives RMSNorm layers (gain only, no bias); ``mlm_head=False`` leaves out the MLM
    transform (logits are then ``h E^T`` with the tied word embeddings ``E``, T5/GPT style).

    Returns:
        name -> tensor, on ``device`` with ``dtype``.
    """
    for value, name in ((vocab_size, "vocab_size"), (hidden, "hidden"), (heads, "heads"),
                        (intermediate, "intermediate"), (layers, "layers"), (max_positions, "max_positions")):
        positive_int(value, name)
    if hidden % heads:
        raise ValueError(f"heads ({heads}) must divide hidden ({hidden})")
    if norm not in ("layer", "rms"):
        raise ValueError(f"norm must be 'layer' or 'rms', got {norm!r}")
    if not std > 0:
        raise ValueError(f"std must be positive, got {std!r}")

    def normal(*shape: int, mean: float = 0.0) -> torch.Tensor:
        sample = torch.randn(*shape, generator=generator, dtype=torch.float64, device="cpu")
        return (mean + std * sample).to(dtype=dtype, device=device)

    params: dict[str, torch.Tensor] = {}

    def add_norm(prefix: str) -> None:
        params[prefix + "LayerNorm.weight"] = normal(hidden, mean=1.0)
        if norm == "layer":
            params[prefix + "LayerNorm.bias"] = normal(hidden)

    def add_linear(prefix: str, n_out: int, n_in: int) -> None:
        params[prefix + "weight"] = normal(n_out, n_in)
        params[prefix + "bias"] = normal(n_out)

    params["embeddings.word_embeddings.weight"] = normal(vocab_size, hidden)
    params["embeddings.position_embeddings.weight"] = normal(max_positions, hidden)
    add_norm("embeddings.")
    for layer in range(layers):
        p = f"encoder.layer.{layer}."
        for part in ("query", "key", "value"):
            add_linear(p + f"attention.self.{part}.", hidden, hidden)
        add_linear(p + "attention.output.dense.", hidden, hidden)
        add_norm(p + "attention.output.")
        add_linear(p + "intermediate.dense.", intermediate, hidden)
        add_linear(p + "output.dense.", hidden, intermediate)
        add_norm(p + "output.")
    if mlm_head:
        add_linear("cls.predictions.transform.dense.", hidden, hidden)
        add_norm("cls.predictions.transform.")
        params["cls.predictions.bias"] = normal(vocab_size)
    return params


_ACTIVATIONS = {"gelu": F.gelu, "relu": F.relu, "identity": lambda t: t, "linear": lambda t: t,
                "leaky_relu": lambda t: F.leaky_relu(t, 0.1), "silu": F.silu, "tanh": torch.tanh}


def toy_bert_forward(params: Mapping[str, torch.Tensor], tokens: Any, *, heads: int, eps: float = 1e-5,
                     head_eps: float | None = None, act: str = "gelu", attn_scaled: bool = True,
                     norm: str = "layer") -> dict[str, Any]:
    """Forward pass of the functional toy BERT of :func:`toy_bert_params` (Post-LN, no masking, no dropout).

    Embedding sum -> norm; per layer: ``h = norm(h + MHA(h))``, ``h = norm(h + W2 act(W1 h + b1) + b2)``; then,
    if the parameters contain an MLM head, ``t = norm_head(act_gelu(dense(h)))`` and logits ``t E^T + bias``,
    else logits ``h E^T``. Attention logits are divided by ``sqrt(head size)`` when ``attn_scaled``.

    Args:
        params: parameter dict (shapes define the sizes; ``heads`` must divide the hidden size).
        tokens: integer tensor ``(B, T)`` of token ids, ``T <= max_positions``.
        heads: number of attention heads.
        eps: epsilon of the encoder norms (embeddings and layers).
        head_eps: epsilon of the MLM-head norm (default: ``eps``).
        act: FFN activation (``gelu``, ``relu``, ``leaky_relu`` (slope 0.1), ``identity``, ``silu``, ``tanh``).
        attn_scaled: divide attention logits by ``sqrt(head size)`` (BERT) or not (T5).
        norm: ``"layer"`` (LayerNorm) or ``"rms"`` (RMSNorm).

    Returns:
        dict with ``hidden`` ``(B, T, d)``, ``attentions`` (list of ``(B, H, T, T)``), ``logits`` and ``probs``
        ``(B, T, V)``, in the parameters' dtype/device.
    """
    if act not in _ACTIVATIONS:
        raise ValueError(f"act must be one of {tuple(_ACTIVATIONS)}, got {act!r}")
    if norm not in ("layer", "rms"):
        raise ValueError(f"norm must be 'layer' or 'rms', got {norm!r}")
    tokens = torch.as_tensor(tokens)
    if tokens.ndim != 2 or tokens.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"tokens must be an integer tensor of shape (B, T), got {tuple(tokens.shape)} {tokens.dtype}")
    word = params["embeddings.word_embeddings.weight"]
    position = params["embeddings.position_embeddings.weight"]
    hidden = word.shape[1]
    heads = positive_int(heads, "heads")
    if hidden % heads:
        raise ValueError(f"heads ({heads}) must divide the hidden size ({hidden})")
    batch, length = tokens.shape
    if length > position.shape[0]:
        raise ValueError(f"sequence length {length} exceeds max_positions {position.shape[0]}")
    head_eps = eps if head_eps is None else head_eps
    activation = _ACTIVATIONS[act]
    tokens = tokens.to(word.device)

    def normalise(x: torch.Tensor, prefix: str, epsilon: float) -> torch.Tensor:
        gamma = params[prefix + "LayerNorm.weight"]
        if norm == "rms":
            return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + epsilon) * gamma
        return F.layer_norm(x, (x.shape[-1],), gamma, params[prefix + "LayerNorm.bias"], epsilon)

    def dense(x: torch.Tensor, prefix: str) -> torch.Tensor:
        return F.linear(x, params[prefix + "weight"], params.get(prefix + "bias"))

    h = normalise(word[tokens] + position[:length], "embeddings.", eps)          # (B, T, d)
    head_size = hidden // heads
    attentions = []
    layer = 0
    while f"encoder.layer.{layer}.attention.self.query.weight" in params:
        p = f"encoder.layer.{layer}."
        q, k_, v = (dense(h, p + f"attention.self.{n}.").view(batch, length, heads, head_size).transpose(1, 2)
                    for n in ("query", "key", "value"))                           # (B, H, T, head) each
        scores = q @ k_.transpose(-1, -2)                                         # (B, H, T, T)
        if attn_scaled:
            scores = scores / math.sqrt(head_size)
        probs = torch.softmax(scores, dim=-1)
        attentions.append(probs)
        context = (probs @ v).transpose(1, 2).reshape(batch, length, hidden)      # (B, T, d)
        h = normalise(h + dense(context, p + "attention.output.dense."), p + "attention.output.", eps)
        ffn = dense(activation(dense(h, p + "intermediate.dense.")), p + "output.dense.")
        h = normalise(h + ffn, p + "output.", eps)
        layer += 1
    if "cls.predictions.transform.dense.weight" in params:
        t = normalise(F.gelu(dense(h, "cls.predictions.transform.dense.")), "cls.predictions.transform.", head_eps)
        logits = t @ word.T + params["cls.predictions.bias"]
    else:
        logits = h @ word.T
    return {"hidden": h, "attentions": attentions, "logits": logits, "probs": torch.softmax(logits, dim=-1)}
