"""Argument checks shared by the kernels (clear ``ValueError``s instead of deep torch errors)."""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch


def as_float_tensor(x: Any, name: str, *, ndim: int | None = None, min_ndim: int | None = None) -> torch.Tensor:
    """``x`` as a floating-point tensor (numpy arrays are converted; integer input becomes float64)."""
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch tensor or numpy array, got {type(x).__name__}")
    if x.dtype == torch.bool or x.is_complex():
        raise ValueError(f"{name} must be real-valued, got dtype {x.dtype}")
    if not x.is_floating_point():
        x = x.to(torch.float64)
    if ndim is not None and x.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimension(s), got shape {tuple(x.shape)}")
    if min_ndim is not None and x.ndim < min_ndim:
        raise ValueError(f"{name} must have at least {min_ndim} dimension(s), got shape {tuple(x.shape)}")
    return x


def positive_int(value: Any, name: str, *, minimum: int = 1) -> int:
    """``value`` as an int >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def finite_float(value: Any, name: str) -> float:
    """``value`` as a finite float."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a finite number, got {value!r}") from None
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {v}")
    return v


def open_unit_interval(value: Any, name: str) -> float:
    """``value`` as a float strictly between 0 and 1."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number in (0, 1), got {value!r}") from None
    if not 0.0 < v < 1.0:
        raise ValueError(f"{name} must lie in the open interval (0, 1), got {v}")
    return v
