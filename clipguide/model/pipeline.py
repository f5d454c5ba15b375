"""Resolver for diffusers pipelines: reuse the pipeline's text tower, add a paired vision tower.

SDXL carries bigG's text tower as ``text_encoder_2``: ``load_clip(pipe)`` reuses it and loads
only a vision tower, from ``vision=`` or, without it, from the vision pairing registered for
that text tower (:func:`clipguide.model.registry.register_vision_pairing`), else bigG's.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import CLIPTextModelWithProjection

from clipguide.model.clip import CLIP
from clipguide.model.openclip import DEFAULT_MODEL
from clipguide.model.registry import LoadRequest, Resolver, paired_vision, resolve

__all__ = ["RESOLVER", "is_pipeline", "lends_text_tower"]


def is_pipeline(obj: Any) -> bool:
    """A diffusers pipeline with a text encoder (the attributes, not the class, decide)."""
    return hasattr(obj, "components") and (
        hasattr(obj, "text_encoder_2") or hasattr(obj, "text_encoder")
    )


def lends_text_tower(pipe: Any) -> bool:
    """The pipeline has a text tower with a projection (SDXL's bigG) that ``load_clip(pipe)``
    can pair with a vision tower; SD 1.x/2.x's text encoders have none."""
    text = getattr(pipe, "text_encoder_2", None) or getattr(pipe, "text_encoder", None)
    return isinstance(text, CLIPTextModelWithProjection)


def _text_tower(pipe: Any) -> tuple[CLIPTextModelWithProjection, Any]:
    text = getattr(pipe, "text_encoder_2", None) or getattr(pipe, "text_encoder", None)
    tok = getattr(pipe, "tokenizer_2", None) or getattr(pipe, "tokenizer", None)
    if not lends_text_tower(pipe) or tok is None:
        raise ValueError(
            f"{type(pipe).__name__} has no bigG-style text tower: expected text_encoder_2 (or "
            f"text_encoder) to be a CLIPTextModelWithProjection with its tokenizer; got "
            f"{type(text).__name__}"
        )
    return text, tok


def _vision(text: CLIPTextModelWithProjection, request: LoadRequest) -> CLIP:
    """The vision tower asked for (or paired with ``text``), created where ``text`` is (on the
    CPU when it is offloaded to ``meta``) in its dtype unless device/dtype were given."""
    vision = request.vision
    if vision is None:
        vision = paired_vision(text, DEFAULT_MODEL)
    if isinstance(vision, CLIP):
        return vision
    home = text.device if text.device.type != "meta" else torch.device("cpu")
    wanted = LoadRequest(
        towers=("vision",),
        device=request.device or home,
        dtype=request.dtype or text.dtype,
        cache_dir=request.cache_dir,
    )
    return resolve(vision, wanted)


def _check_fits(pipe: Any, text: CLIPTextModelWithProjection, vis: CLIP, vision: Any) -> None:
    """The vision tower's embeddings must have the text tower's size: they are compared."""
    text_dim = int(text.config.projection_dim)
    vision_dim = vis.embed_dim
    if text_dim != vision_dim:
        shown = vision if isinstance(vision, str) else vis.name
        raise ValueError(
            f"vision={shown!r} gives {vision_dim}-dim image embeddings but the text tower of "
            f"{type(pipe).__name__} gives {text_dim}-dim ones: they cannot be compared; pass a "
            "vision tower trained with this text tower (for SDXL: bigG, the default), or load a "
            "standalone CLIP by name (load_clip(name)) to score and guide with its own towers"
        )


def _from_pipeline(pipe: Any, request: LoadRequest) -> CLIP:
    """The pipeline's text tower plus a vision tower that follows the pipeline.

    Unless ``device``/``dtype`` were given, the vision tower then follows the pipeline
    (``CLIP.follow``): its execution device and text tower dtype at each use.
    """
    text, tok = _text_tower(pipe)
    vis = _vision(text, request) if "vision" in request.towers else None
    if vis is not None:
        _check_fits(pipe, text, vis, request.vision)
    clip = CLIP(
        text_model=text,
        vision_model=vis.vision_model if vis is not None else None,
        tokenizer=tok,
        preprocess=vis.preprocess if vis is not None else None,
        name=f"{type(pipe).__name__}@{id(pipe):x}+{vis.name if vis is not None else 'text'}",
        logit_scale=vis.logit_scale if vis is not None else None,
    )
    return clip.follow(pipe, device=request.device is None, dtype=request.dtype is None)


RESOLVER = Resolver(
    "a diffusers pipeline (its text_encoder_2 is reused; vision= names the vision tower)",
    is_pipeline,
    _from_pipeline,
)
