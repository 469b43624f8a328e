"""Device, seed and scale settings shared by every chapter.

Three environment variables steer a run of the book:

* ``BOOK_DEVICE`` = ``auto`` (default: CUDA when available, else CPU), ``cpu`` or ``cuda``;
* ``BOOK_SEED``   = a non-negative integer (default 0), the base seed of every random stream;
* ``BOOK_SCALE``  = ``small`` (default: sizes that run on the 2-core CI machine in under 40 s per chapter)
  or ``full`` (bigger experiments, meant for a GPU).
"""
from __future__ import annotations

import os
import random

import numpy as np
import torch

__all__ = ["device", "base_seed", "seed", "rng", "torch_generator", "scale"]

_DEVICES = ("auto", "cpu", "cuda")
_SCALES = ("small", "full")


def device() -> torch.device:
    """The torch device chosen by ``BOOK_DEVICE`` (``auto`` | ``cpu`` | ``cuda``).

    Raises ``ValueError`` for an unknown value and for ``cuda`` on a machine without a GPU.
    """
    choice = os.environ.get("BOOK_DEVICE", "auto").strip().lower() or "auto"
    if choice not in _DEVICES:
        raise ValueError(f"BOOK_DEVICE must be one of {_DEVICES}, got {choice!r}")
    if choice == "cuda" and not torch.cuda.is_available():
        raise ValueError("BOOK_DEVICE=cuda but torch sees no CUDA device; use BOOK_DEVICE=auto or cpu")
    if choice == "auto":
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(choice)


def base_seed() -> int:
    """The base seed from ``BOOK_SEED`` (0 when unset)."""
    raw = os.environ.get("BOOK_SEED", "0").strip() or "0"
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"BOOK_SEED must be a non-negative integer, got {raw!r}") from None
    if value < 0:
        raise ValueError(f"BOOK_SEED must be a non-negative integer, got {value}")
    return value


def seed(n: int | None = None) -> int:
    """Seed python's ``random``, numpy's global state and torch (CPU and CUDA) with ``n``.

    ``n`` defaults to :func:`base_seed`. Returns the seed used.
    """
    if n is None:
        n = base_seed()
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 0:
        raise ValueError(f"seed must be a non-negative integer, got {n!r}")
    n = int(n)
    random.seed(n)
    np.random.seed(n % 2**32)
    torch.manual_seed(n)
    return n


def _stream_seed(stream: int) -> int:
    if not isinstance(stream, (int, np.integer)) or isinstance(stream, bool) or stream < 0:
        raise ValueError(f"stream must be a non-negative integer, got {stream!r}")
    # SeedSequence mixes (base seed, stream) into independent, well-spread states.
    return int(np.random.SeedSequence([base_seed(), int(stream)]).generate_state(1, dtype=np.uint64)[0] >> 1)


def rng(stream: int = 0) -> np.random.Generator:
    """An independent numpy generator for random stream ``stream`` of the current base seed.

    Chapters give each claim its own stream (``rng(8)`` for claim C8, say), so changing ``BOOK_SEED``
    changes every experiment while the experiments stay independent of each other.
    """
    return np.random.default_rng(_stream_seed(stream))


def torch_generator(stream: int = 0, device: torch.device | str | None = None) -> torch.Generator:
    """A torch generator for random stream ``stream`` of the current base seed, on ``device``
    (default: :func:`device`)."""
    dev = torch.device(device) if device is not None else globals()["device"]()
    gen = torch.Generator(device=dev)
    gen.manual_seed(_stream_seed(stream))
    return gen


def scale() -> str:
    """``'small'`` (default) or ``'full'``, from ``BOOK_SCALE``."""
    value = os.environ.get("BOOK_SCALE", "small").strip().lower() or "small"
    if value not in _SCALES:
        raise ValueError(f"BOOK_SCALE must be one of {_SCALES}, got {value!r}")
    return value
