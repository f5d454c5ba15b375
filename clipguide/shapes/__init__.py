"""The micro world: seeded scenes of coloured shapes, an oracle that reads them, and the
shipped model set trained on them (guide CLIP, judge CLIP, SDXL-style UNet, AutoencoderKL, and
an AutoencoderTiny distilled from it as a cheap guidance decoder)."""

from clipguide.shapes.oracle import Detection, Verdict, check, detect
from clipguide.shapes.registry import register
from clipguide.shapes.scenes import (
    COLOURS,
    FAMILIES,
    RELATIONS,
    SHAPES,
    SIZES,
    Prompt,
    Scene,
    ShapeObject,
    parse_prompt,
    prompt_set,
    render,
    sample_scene,
)
from clipguide.shapes.shipped import (
    DEFAULT_GUIDANCE_SCALE,
    DEFAULT_STEPS,
    SCHEDULERS,
    load_shapes_clip,
    load_tiny_decoder,
    make_scheduler,
    pipeline,
)

__all__ = [
    "COLOURS",
    "DEFAULT_GUIDANCE_SCALE",
    "DEFAULT_STEPS",
    "FAMILIES",
    "RELATIONS",
    "SCHEDULERS",
    "SHAPES",
    "SIZES",
    "Detection",
    "Prompt",
    "Scene",
    "ShapeObject",
    "Verdict",
    "check",
    "detect",
    "load_shapes_clip",
    "load_tiny_decoder",
    "make_scheduler",
    "parse_prompt",
    "pipeline",
    "prompt_set",
    "render",
    "sample_scene",
]

register()  # also done by the clipguide.sources entry point; importing is enough without it
