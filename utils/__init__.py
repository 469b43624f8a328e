"""utils: the shared, tested library of the kexue.fm companion book.

Importing it performs no I/O. The core (device/seed/scale settings and the claims helper) is imported here;
domain modules (``utils.geometry``, ``utils.concentration``, ...) are imported by the chapters that need them.
"""
from __future__ import annotations

from .claims import check, not_reproducible, summary
from .device import base_seed, device, rng, scale, seed, torch_generator
from .plotting import use_book_style

__all__ = ["check", "not_reproducible", "summary", "base_seed", "device", "rng", "scale", "seed",
           "torch_generator", "use_book_style", "setup_notebook"]


def setup_notebook() -> str:
    """Apply the figure style, seed every generator from ``BOOK_SEED`` and return a one-line description of
    the run (device, scale, seed) for the chapter to print."""
    import torch

    use_book_style()
    used = seed()
    return f"device={device()}  scale={scale()}  seed={used}  torch={torch.__version__}"
