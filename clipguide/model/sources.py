"""``load_clip``: one CLIP object from wherever it is kept, through the table of resolvers.

The table below lists every built-in kind of source in the order they are asked; registered
names (``register_source``, plugins) are asked before all of them. ``load_clip`` only checks
its arguments and hands them to :func:`clipguide.model.registry.resolve`.
"""

from __future__ import annotations

from typing import Any

import torch

from clipguide.model import openclip, pipeline, transformers_layout
from clipguide.model.clip import CLIP
from clipguide.model.devices import check_device
from clipguide.model.openclip import DEFAULT_MODEL, DEFAULT_PRETRAINED
from clipguide.model.registry import UNSET, LoadRequest, Resolver, register_resolver, resolve

__all__ = ["load_clip", "DEFAULT_MODEL", "DEFAULT_PRETRAINED", "TOWERS", "BUILT_IN"]

TOWERS = ("text", "vision")
_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def _loaded(clip: CLIP, request: LoadRequest) -> CLIP:
    """A loaded CLIP is returned as is, moved or cast when asked."""
    if request.device or request.dtype:
        return clip.to(request.device, request.dtype)
    return clip


BUILT_IN = (
    Resolver("a loaded clipguide CLIP (returned as is)", lambda s: isinstance(s, CLIP), _loaded),
    pipeline.RESOLVER,
    *openclip.RESOLVERS,
    *transformers_layout.RESOLVERS,
    openclip.NAME_RESOLVER,
    transformers_layout.REPO_RESOLVER,
)
"""The built-in resolvers, in the order they are asked (after the registered names)."""

for _resolver in BUILT_IN:
    register_resolver(_resolver)


def _dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    if dtype is None:
        return None
    if isinstance(dtype, torch.dtype) and dtype.is_floating_point:
        return dtype
    if isinstance(dtype, str) and dtype in _DTYPES:
        return _DTYPES[dtype]
    raise ValueError(
        f"dtype={dtype!r} is not supported; use one of {list(_DTYPES)} or a floating-point "
        f"torch.dtype (torch.float32, torch.float16, torch.bfloat16)"
    )


def _towers(towers: Any) -> tuple[str, ...]:
    if isinstance(towers, str):
        towers = (towers,)
    towers = tuple(towers)
    if not towers or any(t not in TOWERS for t in towers):
        raise ValueError(f"towers={towers!r}: choose a non-empty subset of {TOWERS}")
    return towers


def _one_dtype(dtype: Any, torch_dtype: Any) -> Any:
    """``torch_dtype`` is diffusers' name for ``dtype``; both at once is ambiguous."""
    if torch_dtype is None:
        return dtype
    if dtype is not None:
        raise ValueError(
            f"dtype={dtype!r} and torch_dtype={torch_dtype!r} were both given; torch_dtype is "
            "another name for dtype (as in diffusers): pass one of them"
        )
    return torch_dtype


def load_clip(
    source: Any = DEFAULT_MODEL,
    pretrained: str | None = UNSET,
    *,
    towers: tuple[str, ...] | str = TOWERS,
    device: torch.device | str | None = None,
    dtype: torch.dtype | str | None = None,
    torch_dtype: torch.dtype | str | None = None,
    vision: Any = None,
    cache_dir: str | None = None,
) -> CLIP:
    """Load a CLIP (bigG by default) from wherever it is kept.

    Args:
        source: open_clip model name (``"ViT-bigG-14"``, or any registered config);
            ``"hf-hub:org/repo"`` or ``"local-dir:/folder"`` (open_clip layout);
            a transformers-layout folder or repo id (``CLIPModel`` or a single tower);
            a registered name (``"shapes"`` / ``"shapes-judge"``: the micro world's models);
            an open_clip model object; a loaded ``CLIP`` (returned as is);
            or a diffusers pipeline, whose ``text_encoder_2``/``tokenizer_2`` are reused.
        pretrained: open_clip tag or checkpoint file for a model name (default
            ``"laion2b_s39b_b160k"`` for ViT-bigG-14); None gives random weights.
        towers: which towers to load: ``("text",)``, ``("vision",)`` or both.
        device, dtype: where and in which precision (fp32/fp16/bf16) to put new weights;
            weights read from files default to fp32 whatever their stored precision (as
            open_clip does), a pipeline's vision tower to its text tower's dtype; without
            them a pipeline's vision tower follows the pipeline's device and dtype at each use.
            ``torch_dtype`` is accepted for ``dtype``, as diffusers names it.
        vision: with a pipeline source, where the vision tower comes from (any source above);
            default: the vision tower registered for the pipeline's text tower, else bigG's.
    """
    request = LoadRequest(
        towers=_towers(towers),
        dtype=_dtype(_one_dtype(dtype, torch_dtype)),
        device=check_device(device),
        pretrained=pretrained,
        vision=vision,
        cache_dir=cache_dir,
    )
    return resolve(source, request)
