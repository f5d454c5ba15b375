"""Argument checks shared by every use (conditioning, guidance, scoring): cheap, with messages
that name the argument, show the value received and say what is accepted."""

from __future__ import annotations

import math
import numbers
from typing import Any

import torch

__all__ = ["describe", "describe_object", "check", "is_real", "is_int"]


def describe(value: Any) -> str:
    """A short repr for error messages (tensors by shape, dtype and device)."""
    if isinstance(value, torch.Tensor):
        return f"tensor(shape={tuple(value.shape)}, dtype={value.dtype}, device={value.device})"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def describe_object(value: Any) -> str:
    """Scalars and containers by value, other objects (pipelines, models) by class name."""
    plain = (type(None), str, bytes, int, float, bool, list, tuple, dict)
    return describe(value) if isinstance(value, plain) else f"<{type(value).__name__}>"


def check(cond: bool, name: str, value: Any, accepted: str) -> None:
    """Raise ``ValueError('name=value is not valid; accepted: ...')`` unless ``cond``."""
    if not cond:
        raise ValueError(f"{name}={describe(value)} is not valid; accepted: {accepted}")


def is_real(value: Any) -> bool:
    """A finite real number (not a bool)."""
    return (
        isinstance(value, numbers.Real)
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )


def is_int(value: Any) -> bool:
    """An integer (not a bool)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def checked_box(box: Any, name: str = "box") -> tuple[float, float, float, float]:
    """``box`` as floats ``(x0, y0, x1, y1)`` if it is a non-empty box in fractions of the
    image (origin top-left), else a ValueError naming ``name`` and the value."""
    accepted = "4 numbers (x0, y0, x1, y1) in [0, 1] with x0 < x1 and y0 < y1"
    check(
        isinstance(box, (tuple, list)) and len(box) == 4 and all(is_real(v) for v in box),
        name,
        box,
        accepted,
    )
    x0, y0, x1, y1 = (float(v) for v in box)
    check(
        all(0.0 <= v <= 1.0 for v in (x0, y0, x1, y1)), name, box, f"{accepted} (inside the image)"
    )
    check(x0 < x1 and y0 < y1, name, box, f"{accepted} (not empty)")
    return (x0, y0, x1, y1)
