"""utils.enlargement: the enlargement maps against explicit matrices, and enlarged models computing the same function
(a functional toy BERT, checked against Hugging Face's BertForMaskedLM, and the real offline MiniLM)."""
import math
import os

import pytest
import torch
import torch.nn.functional as F

from utils.enlargement import (enlarge_bert_config, enlarge_bert_state_dict, enlarge_embedding, enlarge_layernorm,
                               enlarge_linear, repeat_scale, toy_bert_forward, toy_bert_params)


def gen(seed):
    return torch.Generator().manual_seed(seed)


def s_matrix(d, k):
    """S_k = I_d (x) 1_k / sqrt(k), shape (k d, d)."""
    return torch.kron(torch.eye(d, dtype=torch.float64), torch.ones(k, 1, dtype=torch.float64)) / math.sqrt(k)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_repeat_scale_is_the_isometry_s(k):
    x = torch.randn(5, 8, generator=gen(0), dtype=torch.float64)
    S = s_matrix(8, k)
    assert torch.allclose(S.T @ S, torch.eye(8, dtype=torch.float64), atol=1e-15, rtol=0)  # S^T S = I
    assert torch.allclose(repeat_scale(x, k), x @ S.T, atol=1e-15, rtol=0)
    assert torch.allclose(repeat_scale(x, k).norm(dim=1), x.norm(dim=1), atol=1e-13, rtol=0)
    # along dim 0, plain repetition, and the dtype/device are kept
    assert torch.equal(repeat_scale(x, k, 0, mode="rep"), x.repeat_interleave(k, 0))
    assert repeat_scale(x.float(), k).dtype == torch.float32


def test_repeat_scale_groups_and_tiling():
    x = torch.arange(1.0, 7.0, dtype=torch.float64)  # [1..6]
    pairwise = repeat_scale(x, 2, group=2, mode="rep")
    assert pairwise.tolist() == [1, 2, 1, 2, 3, 4, 3, 4, 5, 6, 5, 6]
    tiled = repeat_scale(x, 3, group=6)
    assert torch.allclose(tiled, torch.cat([x, x, x]) / math.sqrt(3), atol=1e-15)
    y = torch.randn(2, 4, 3, generator=gen(1), dtype=torch.float64)
    assert torch.allclose(repeat_scale(y, 2, dim=1, group=2, mode="rep"),
                          torch.cat([y[:, :2], y[:, :2], y[:, 2:], y[:, 2:]], dim=1))


@pytest.mark.parametrize("k", [2, 3])
def test_enlarge_linear_special_cases(k):
    W = torch.randn(16, 8, generator=gen(2), dtype=torch.float64)  # torch (out, in)
    b = torch.randn(16, generator=gen(3), dtype=torch.float64)
    x = torch.randn(4, 8, generator=gen(4), dtype=torch.float64)
    y = F.linear(x, W, b)
    Sx, Sy = repeat_scale(x, k), repeat_scale(y, k)
    W4, b4 = enlarge_linear(W, b, k, in_scale="rep_div_sqrtk", out_scale="rep_div_sqrtk")  # C4
    assert torch.allclose(W4, s_matrix(16, k) @ W @ s_matrix(8, k).T, atol=1e-15)       # W~ = S W S^T
    assert torch.allclose(F.linear(Sx, W4, b4), Sy, atol=1e-13, rtol=0)
    W6, b6 = enlarge_linear(W, b, k, in_scale="rep_div_sqrtk", out_scale="rep")             # C6 first layer
    assert torch.allclose(F.linear(Sx, W6, b6), y.repeat_interleave(k, -1), atol=1e-13, rtol=0)
    W2, b2 = enlarge_linear(W, b, k, in_scale="rep", out_scale="rep_div_sqrtk")             # C6 second layer
    assert torch.allclose(F.linear(x.repeat_interleave(k, -1), W2, b2), Sy, atol=1e-13, rtol=0)
    assert torch.allclose(b2, repeat_scale(b, k), atol=0)                                   # b / sqrt(k), not b / k
    Wq, bq = enlarge_linear(W, b, k, in_scale="rep_div_sqrtk", out_scale="rep_div_sqrtk", extra=k ** 0.25)
    assert torch.allclose(F.linear(Sx, Wq, bq), k ** 0.25 * Sy, atol=1e-13, rtol=0)
    Wn, bn = enlarge_linear(W, None, k, in_scale="rep_div_sqrtk", out_scale="rep_div_sqrtk")
    assert bn is None and torch.equal(Wn, W4)


def test_enlarge_linear_pairwise_output_groups():
    W = torch.randn(6, 4, generator=gen(5), dtype=torch.float64)
    x = torch.randn(3, 4, generator=gen(6), dtype=torch.float64)
    Wp, _ = enlarge_linear(W, None, 2, in_scale="rep_div_sqrtk", out_scale="rep_div_sqrtk", group=2)
    assert torch.allclose(F.linear(repeat_scale(x, 2), Wp), repeat_scale(x @ W.T, 2, group=2), atol=1e-14)


@pytest.mark.parametrize("k", [2, 3])
def test_layernorm_commutes_with_eps_over_k(k):
    x = torch.randn(5, 8, generator=gen(7), dtype=torch.float64)
    gamma, beta = 1 + torch.randn(2, 8, generator=gen(8), dtype=torch.float64)
    eps = 1e-5
    g_big, b_big = enlarge_layernorm(gamma, beta, k)
    small = repeat_scale(F.layer_norm(x, (8,), gamma, beta, eps), k)
    exact = F.layer_norm(repeat_scale(x, k), (8 * k,), g_big, b_big, eps / k)
    assert torch.allclose(exact, small, atol=1e-14, rtol=0)
    loose = F.layer_norm(repeat_scale(x, k), (8 * k,), g_big, b_big, eps)
    assert (loose - small).abs().max() > 1e-9  # eps not rescaled: an eps-sized mismatch
    # a plain repetition as input keeps eps
    rep = F.layer_norm(x.repeat_interleave(k, -1), (8 * k,), g_big, b_big, eps)
    assert torch.allclose(rep, small, atol=1e-14, rtol=0)
    assert enlarge_layernorm(gamma, None, k)[1] is None


def test_enlarge_embedding():
    E = torch.randn(10, 4, generator=gen(9), dtype=torch.float64)
    big = enlarge_embedding(E, 3)
    assert big.shape == (10, 12)
    assert torch.allclose(big @ big.T, E @ E.T, atol=1e-13)  # tied logits h E^T are unchanged


TOY = dict(vocab_size=50, hidden=8, heads=2, intermediate=16, layers=2, max_positions=7)


@pytest.mark.parametrize("k", [2, 3, 4])
def test_toy_bert_enlarged_computes_the_same_function(k):
    params = toy_bert_params(**TOY, generator=gen(10))
    tokens = torch.randint(0, 50, (3, 7), generator=gen(11))
    small = toy_bert_forward(params, tokens, heads=2)
    big = toy_bert_forward(enlarge_bert_state_dict(params, k), tokens, heads=2, eps=1e-5 / k, head_eps=1e-5)
    assert (big["probs"] - small["probs"]).abs().max() < 1e-12
    assert (big["hidden"] - repeat_scale(small["hidden"], k)).abs().max() < 1e-12
    for a_small, a_big in zip(small["attentions"], big["attentions"]):
        assert (a_small - a_big).abs().max() < 1e-12
    # the article's FFN output bias b/k (instead of b/sqrt(k)) is not lossless
    article = enlarge_bert_state_dict(params, k)
    for name in article:
        if name.endswith(".output.dense.bias") and ".attention." not in name:
            article[name] = article[name] / math.sqrt(k)
    wrong = toy_bert_forward(article, tokens, heads=2, eps=1e-5 / k, head_eps=1e-5)
    assert (wrong["probs"] - small["probs"]).abs().max() > 1e-5


@pytest.mark.parametrize("k", [2, 3])
def test_t5_like_simplest_rule_and_tiling(k):
    params = toy_bert_params(**TOY, generator=gen(12), norm="rms", mlm_head=False)
    tokens = torch.randint(0, 50, (2, 7), generator=gen(13))
    opts = dict(heads=2, act="relu", attn_scaled=False, norm="rms")
    small = toy_bert_forward(params, tokens, **opts)
    big = enlarge_bert_state_dict(params, k, attn_scaled=False, act="relu")
    for name, value in big.items():  # simplest rule: every matrix / k, every vector / sqrt(k)
        factor = 1 / k if value.ndim == 2 and "embeddings" not in name else 1 / math.sqrt(k)
        expected = params[name].repeat_interleave(k, -1)
        if value.ndim == 2 and "embeddings" not in name:
            expected = expected.repeat_interleave(k, 0)
        assert torch.allclose(value, expected * factor, atol=0)
    out = toy_bert_forward(big, tokens, eps=1e-5 / k, **opts)
    assert (out["probs"] - small["probs"]).abs().max() < 1e-12
    tiled = toy_bert_forward(enlarge_bert_state_dict(params, k, attn_scaled=False, act="relu", layout="tile"),
                             tokens, eps=1e-5 / k, **opts)
    assert (tiled["probs"] - small["probs"]).abs().max() > 1e-5  # tiling mixes heads
    one_head = dict(opts, heads=1)
    small1 = toy_bert_forward(params, tokens, **one_head)
    tiled1 = toy_bert_forward(enlarge_bert_state_dict(params, k, attn_scaled=False, act="relu", layout="tile"),
                              tokens, eps=1e-5 / k, **one_head)
    assert (tiled1["probs"] - small1["probs"]).abs().max() < 1e-12  # one head: tiling is fine


def test_toy_bert_matches_hugging_face_bert_for_masked_lm():
    """Peer: the functional toy BERT is Hugging Face's BertForMaskedLM (eager attention, exact GeLU)."""
    from transformers import BertConfig, BertForMaskedLM
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    params = toy_bert_params(**TOY, generator=gen(14))
    config = BertConfig(vocab_size=50, hidden_size=8, num_attention_heads=2, intermediate_size=16,
                        num_hidden_layers=2, max_position_embeddings=7, type_vocab_size=1, hidden_act="gelu",
                        layer_norm_eps=1e-5, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    config._attn_implementation = "eager"
    model = BertForMaskedLM(config).to(torch.float64).eval()
    state = {("" if name.startswith("cls.") else "bert.") + name: value for name, value in params.items()}
    state["bert.embeddings.token_type_embeddings.weight"] = torch.zeros(1, 8, dtype=torch.float64)
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and set(missing) <= {"cls.predictions.decoder.weight", "cls.predictions.decoder.bias",
                                               "bert.embeddings.position_ids", "bert.embeddings.token_type_ids"}
    assert torch.equal(model.cls.predictions.decoder.weight, params["embeddings.word_embeddings.weight"])
    tokens = torch.randint(0, 50, (2, 7), generator=gen(15))
    with torch.no_grad():
        hf_logits = model(input_ids=tokens).logits
    assert torch.allclose(toy_bert_forward(params, tokens, heads=2)["logits"], hf_logits, atol=1e-12, rtol=0)
    # the enlargement maps work on the HF names too (prefix bert.), and the enlarged HF model is exact
    big_state = enlarge_bert_state_dict(model.state_dict(), 2)
    big_config = BertConfig(**enlarge_bert_config(config, 2))
    big_config._attn_implementation = "eager"
    big_model = BertForMaskedLM(big_config).to(torch.float64).eval()
    big_model.load_state_dict(big_state)
    for module in big_model.cls.predictions.transform.modules():  # the head LN sees a plain repetition: eps
        if isinstance(module, torch.nn.LayerNorm):
            module.eps = 1e-5
    with torch.no_grad():
        big_probs = big_model(input_ids=tokens).logits.softmax(-1)
    assert (big_probs - hf_logits.softmax(-1)).abs().max() < 1e-12


def test_real_minilm_enlarged_exactly():
    """C12(b): the pretrained MiniLM (6-layer BERT, GeLU) x2 computes the same hidden states up to S (float64).
    About 4 s, mostly importing transformers and loading the weights."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    from transformers import AutoModel, AutoTokenizer, BertConfig, BertModel
    from transformers.utils import logging as hf_logging

    from utils.encoder import minilm_path

    hf_logging.set_verbosity_error()
    path = str(minilm_path())
    small = AutoModel.from_pretrained(path, add_pooling_layer=False, dtype=torch.float64).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    batch = tokenizer(["The quick brown fox jumps over the lazy dog.", "Enlarged models compute the same."],
                      padding=True, return_tensors="pt")
    config = BertConfig(**enlarge_bert_config(small.config, 2))
    assert config.hidden_size == 768 and config.num_attention_heads == 12 and config.layer_norm_eps == 5e-13
    big = BertModel(config, add_pooling_layer=False).to(torch.float64).eval()
    big.load_state_dict(enlarge_bert_state_dict(small.state_dict(), 2))
    with torch.no_grad():
        h_small = small(**batch).last_hidden_state
        h_big = big(**batch).last_hidden_state
    assert (h_big - repeat_scale(h_small, 2)).abs().max() < 1e-10


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_follows_input():
    params = toy_bert_params(**TOY, generator=gen(16), device="cuda")
    big = enlarge_bert_state_dict(params, 2)
    assert all(v.device.type == "cuda" for v in big.values())
    tokens = torch.randint(0, 50, (2, 7), generator=gen(17))
    small = toy_bert_forward(params, tokens, heads=2)
    out = toy_bert_forward(big, tokens, heads=2, eps=5e-6, head_eps=1e-5)
    assert (out["probs"] - small["probs"]).abs().max() < 1e-12


def test_validation():
    x = torch.zeros(4, 6)
    with pytest.raises(ValueError, match="k must"):
        repeat_scale(x, 0)
    with pytest.raises(ValueError, match="group"):
        repeat_scale(x, 2, group=4)
    with pytest.raises(ValueError, match="mode"):
        repeat_scale(x, 2, mode="zero_pad")
    with pytest.raises(ValueError, match="dim"):
        repeat_scale(x, 2, dim=2)
    with pytest.raises(ValueError, match="dimension"):
        enlarge_linear(torch.zeros(3), None, 2, in_scale="rep", out_scale="rep")
    with pytest.raises(ValueError, match="bias"):
        enlarge_linear(torch.zeros(3, 2), torch.zeros(2), 2, in_scale="rep", out_scale="rep")
    with pytest.raises(ValueError, match="in_scale"):
        enlarge_linear(torch.zeros(3, 2), None, 2, in_scale="half", out_scale="rep")
    with pytest.raises(ValueError, match="extra"):
        enlarge_linear(torch.zeros(3, 2), None, 2, in_scale="rep", out_scale="rep", extra=float("nan"))
    with pytest.raises(ValueError, match="differs"):
        enlarge_layernorm(torch.ones(4), torch.zeros(3), 2)
    params = toy_bert_params(**TOY, generator=gen(18))
    with pytest.raises(ValueError, match="act"):
        enlarge_bert_state_dict(params, 2, act="mystery")
    with pytest.raises(ValueError, match="layout"):
        enlarge_bert_state_dict(params, 2, layout="zero_pad")
    with pytest.raises(ValueError, match="don't know"):
        enlarge_bert_state_dict({"decoder.something.weight": torch.zeros(2, 2)}, 2)
    with pytest.raises(ValueError, match="non-empty"):
        enlarge_bert_state_dict({}, 2)
    with pytest.raises(ValueError, match="config lacks"):
        enlarge_bert_config({"hidden_size": 8}, 2)
    with pytest.raises(ValueError, match="divide"):
        toy_bert_params(50, 8, 3, 16, 1, 7)
    with pytest.raises(ValueError, match="exceeds"):
        toy_bert_forward(params, torch.zeros(1, 9, dtype=torch.int64), heads=2)
    with pytest.raises(ValueError, match="integer"):
        toy_bert_forward(params, torch.zeros(1, 3), heads=2)
