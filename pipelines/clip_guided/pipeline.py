"""diffusers custom pipeline: Stable Diffusion XL with clipguide's CLIP-gradient guidance.

Load with ``DiffusionPipeline.from_pretrained(model, custom_pipeline="pipelines/clip_guided")``
and call with ``clip_guidance=clipguide.CLIPGuidance(clip, ...)``. All the work is in clipguide;
this file only attaches the guidance around the stock SDXL ``__call__``.
"""

from __future__ import annotations

from typing import Any

from diffusers import StableDiffusionXLPipeline

from clipguide.guidance import CLIPGuidance

__all__ = ["CLIPGuidedStableDiffusionXLPipeline"]


class CLIPGuidedStableDiffusionXLPipeline(StableDiffusionXLPipeline):
    """``StableDiffusionXLPipeline`` whose ``__call__`` accepts ``clip_guidance=CLIPGuidance(...)``."""

    def __call__(self, *args: Any, clip_guidance: CLIPGuidance | None = None, **kwargs: Any) -> Any:
        if clip_guidance is None:
            return super().__call__(*args, **kwargs)
        if not isinstance(clip_guidance, CLIPGuidance):
            raise TypeError(
                f"clip_guidance must be a clipguide.CLIPGuidance or None, got {type(clip_guidance).__name__}"
            )
        with clip_guidance.attach(self):
            return super().__call__(*args, **kwargs)
