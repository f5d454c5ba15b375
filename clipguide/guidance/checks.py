"""Argument checks for guidance: cheap, at construction, with messages naming what was given."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from clipguide.checks import check, describe, describe_object, is_int, is_real

__all__ = [
    "describe",
    "describe_object",
    "check",
    "is_real",
    "is_int",
    "check_clip",
    "check_target",
    "check_decoder",
]


def _towers(clip: Any) -> tuple[str, ...]:
    return tuple(t for t in ("text", "vision") if getattr(clip, f"{t}_model", None) is not None)


def check_clip(clip: Any) -> None:
    """A CLIP with a vision tower (what guidance differentiates through)."""
    if getattr(clip, "vision_model", None) is None or not callable(
        getattr(clip, "image_features", None)
    ):
        raise TypeError(
            f"clip={describe_object(clip)} is not valid: guidance needs a clipguide.CLIP with a vision "
            f"tower (towers found: {_towers(clip)}); load one with clipguide.load_clip(...)"
        )


def _check_tensor_target(target: torch.Tensor, dim: int | None) -> None:
    accepted = f"an embedding tensor (D,) or (N, D) with D = the CLIP's embed dim ({dim})"
    check(target.is_floating_point(), "target", target, f"{accepted}, floating point")
    check(target.dim() in (1, 2) and target.numel() > 0, "target", target, accepted)
    check(dim is None or target.shape[-1] == dim, "target", target, accepted)
    if target.device.type != "meta":
        rows = target.detach().float().reshape(-1, target.shape[-1])
        check(bool(torch.isfinite(rows).all()), "target", target, f"{accepted}, finite values")
        check(bool((rows.norm(dim=-1) > 0).all()), "target", target, f"{accepted}, no zero rows")


def check_target(target: Any, clip: Any) -> None:
    """None (the prompt), non-empty text(s), or an embedding of the CLIP's width."""
    accepted = "None (the prompt), a non-empty str, a non-empty list of str or an embedding"
    if isinstance(target, torch.Tensor):
        return _check_tensor_target(target, getattr(clip, "embed_dim", None))
    if isinstance(target, str):
        check(bool(target.strip()), "target", target, accepted)
    elif target is not None:
        texts = isinstance(target, Sequence) and all(isinstance(t, str) for t in target)
        check(texts and len(target) > 0, "target", target, accepted)
        check(all(t.strip() for t in target), "target", target, f"{accepted} (no empty text)")
    if "text" not in _towers(clip):
        what = "the prompt" if target is None else "a text target"
        raise ValueError(
            f"target={describe(target)} is not valid for this clip: {what} needs a text tower "
            f"and the clip has {_towers(clip)}; pass target=<an embedding tensor> or a CLIP "
            "with both towers"
        )


def check_decoder(decoder: Any) -> None:
    """None (the pipeline's VAE), a diffusers autoencoder, or a callable latents -> images."""
    if decoder is None:
        return
    accepted = (
        "None (the pipeline's VAE), a diffusers autoencoder (decode() and config.scaling_factor)"
        " or a callable mapping latents to images in [-1, 1]"
    )
    if hasattr(decoder, "decode"):
        factor = getattr(getattr(decoder, "config", None), "scaling_factor", None)
        check(is_real(factor) and factor > 0, "decoder", decoder, accepted)
    else:
        check(callable(decoder), "decoder", decoder, accepted)
