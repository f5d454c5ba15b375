"""Which text towers a pipeline (or a clipguide CLIP) conditions on, and its conventions:
which towers give the pooled embedding, which layer, normed or not, where the result goes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["Tower", "Target", "text_towers", "as_device", "hidden_layer"]


@dataclass(frozen=True)
class Tower:
    tokenizer: Any
    model: torch.nn.Module
    pooled: bool  # contributes to the pooled embedding
    final_norm: bool  # SD 1/2: hidden states after the final layer norm


@dataclass(frozen=True)
class Target:
    towers: tuple[Tower, ...]
    force_zeros: bool
    dtype: torch.dtype
    device: torch.device
    t5: Any = None  # SD3: callable(prompts, max_sequence_length) -> (B, S, 4096)


def _is_clip(obj: Any) -> bool:
    return (
        hasattr(obj, "text_model")
        and hasattr(obj, "tokenizer")
        and callable(getattr(obj, "tokenize", None))
    )


def _clip_target(clip: Any, force_zeros: bool | None, device: Any) -> Target:
    if clip.text_model is None:
        raise ValueError(f"this CLIP ({clip.name!r}) has no text tower; load it with 'text'")
    tower = Tower(clip.tokenizer, clip.text_model, pooled=True, final_norm=False)
    dev = as_device(device) if device is not None else clip.text_model.device
    return Target((tower,), bool(force_zeros), clip.text_model.dtype, dev)


def text_towers(obj: Any, force_zeros: bool | None, device: Any) -> Target:
    """Text towers and conventions of a pipeline or a clipguide CLIP."""
    if _is_clip(obj):
        return _clip_target(obj, force_zeros, device)
    if not hasattr(obj, "text_encoder") or not hasattr(obj, "tokenizer"):
        raise TypeError(
            "pipe_or_clip must be a diffusers pipeline with text encoders (SD, SDXL, SDXL "
            f"refiner, SD3) or a clipguide CLIP with a text tower, got {type(obj).__name__}"
        )
    dev = as_device(device) if device is not None else obj._execution_device
    config_zeros = bool(getattr(obj.config, "force_zeros_for_empty_prompt", False))
    zeros = config_zeros if force_zeros is None else bool(force_zeros)
    te, te2 = obj.text_encoder, getattr(obj, "text_encoder_2", None)
    if hasattr(obj, "tokenizer_3"):  # SD3: CLIP-L + bigG (+ T5, encoded by the pipeline)
        towers = (
            Tower(obj.tokenizer, te, pooled=True, final_norm=False),
            Tower(obj.tokenizer_2, te2, pooled=True, final_norm=False),
        )

        def t5(prompts: list[str], max_sequence_length: int) -> torch.Tensor:
            return obj._get_t5_prompt_embeds(
                prompt=prompts, max_sequence_length=max_sequence_length, device=dev
            )

        return Target(towers, zeros, te.dtype, dev, t5)
    if te2 is not None or hasattr(obj, "text_encoder_2"):  # SDXL base/refiner/bigG-only
        if te2 is None:
            raise ValueError("this SDXL-style pipeline has text_encoder_2=None; it needs bigG")
        towers = (Tower(obj.tokenizer_2, te2, pooled=True, final_norm=False),)
        if te is not None:
            towers = (Tower(obj.tokenizer, te, pooled=False, final_norm=False),) + towers
        return Target(towers, zeros, te2.dtype, dev)
    if te is None:
        raise ValueError(f"{type(obj).__name__} has text_encoder=None; nothing to encode with")
    return Target((Tower(obj.tokenizer, te, pooled=False, final_norm=True),), zeros, te.dtype, dev)


def as_device(device: Any) -> torch.device:
    """``device`` as a ``torch.device``; a clear error naming it otherwise."""
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(
            f"device must be a torch.device or a device string such as 'cpu' or 'cuda:0', "
            f"got {device!r}"
        ) from err


def hidden_layer(tower: Tower, clip_skip: int | None) -> int:
    """The hidden layer a pipeline conditions on for ``clip_skip`` (checked)."""
    n = tower.model.config.num_hidden_layers
    if clip_skip is not None and (
        isinstance(clip_skip, bool) or not isinstance(clip_skip, int) or not 0 <= clip_skip < n
    ):
        raise ValueError(f"clip_skip must be None or an int in [0, {n - 1}], got {clip_skip!r}")
    if tower.final_norm:  # SD 1/2: last layer (normed), or clip_skip layers before it
        return -1 if clip_skip is None else -(clip_skip + 1)
    return -2 if clip_skip is None else -(clip_skip + 2)  # SDXL/SD3 count from the penultimate
