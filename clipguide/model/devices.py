"""Devices named by users: parsed, and checked to exist on this machine, before any work."""

from __future__ import annotations

import torch

__all__ = ["check_device", "available_devices"]

_DEVICE_TYPES = ("cpu", "cuda", "mps", "xpu")


def available_devices() -> list[str]:
    """The devices torch can use here: ``cpu`` and any ``cuda``/``mps``/``xpu`` ones."""
    found = ["cpu"]
    if torch.cuda.is_available():
        found += ["cuda"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if torch.backends.mps.is_available():
        found.append("mps")
    if hasattr(torch, "xpu") and torch.xpu.is_available():
        found += ["xpu"] + [f"xpu:{i}" for i in range(torch.xpu.device_count())]
    return found


def check_device(device: torch.device | str | None) -> torch.device | None:
    """``device`` as a ``torch.device`` if it exists on this machine; a clear error if not."""
    if device is None:
        return None
    if not isinstance(device, (str, torch.device)):
        raise TypeError(f"device must be a str or torch.device, got {type(device).__name__}")
    accepted = f"accepted here: {available_devices()}"
    try:
        parsed = torch.device(device)
    except RuntimeError:
        raise ValueError(
            f"device={device!r} is not a torch device name ('cpu', 'cuda', 'cuda:N', 'mps'); "
            f"{accepted}"
        ) from None
    if parsed.type not in _DEVICE_TYPES:
        raise ValueError(
            f"device={device!r}: {parsed.type!r} devices are not supported; {accepted}"
        )
    if parsed.type != "cpu":
        backend = torch.backends.mps if parsed.type == "mps" else getattr(torch, parsed.type)
        if not backend.is_available():
            raise ValueError(
                f"device={device!r}: no {parsed.type} device on this machine; {accepted}"
            )
        count = getattr(backend, "device_count", lambda: 1)()
        if parsed.index is not None and parsed.index >= count:
            raise ValueError(
                f"device={device!r}: this machine has {count} {parsed.type} device(s); {accepted}"
            )
    return parsed
