"""The micro world: seeded scenes of coloured shapes, an oracle that reads them, and the
shipped model set trained on them (guide CLIP, judge CLIP, SDXL-style UNet, AutoencoderKL, and
an AutoencoderTiny distilled from it as a cheap guidance decoder).

A client of the library: it registers its models (``registry``) through clipguide's public
sources registry, declared as an entry point, as any third party would. ``grammar`` parses
captions, ``scenes`` samples them, ``render`` draws them, ``oracle`` checks images against
captions, ``shipped`` loads the trained models, ``training`` trains them.
"""

from typing import TYPE_CHECKING

from clipguide._lazy import lazy_package
from clipguide.shapes.registry import register

if TYPE_CHECKING:  # imported on first use (clipguide._lazy)
    from clipguide.shapes.grammar import (
        COLOURS,
        FAMILIES,
        RELATIONS,
        SHAPES,
        SIZES,
        TRAIN_FAMILIES,
        Group,
        Prompt,
        parse_caption,
    )
    from clipguide.shapes.oracle import Detection, Verdict, check, detect
    from clipguide.shapes.render import render
    from clipguide.shapes.scenes import IMAGE_SIZE, Scene, ShapeObject, prompt_set, sample_scene
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
    "IMAGE_SIZE",
    "RELATIONS",
    "SCHEDULERS",
    "SHAPES",
    "SIZES",
    "TRAIN_FAMILIES",
    "Detection",
    "Group",
    "Prompt",
    "Scene",
    "ShapeObject",
    "Verdict",
    "check",
    "detect",
    "draw",
    "load_shapes_clip",
    "load_tiny_decoder",
    "make_scheduler",
    "parse_caption",
    "pipeline",
    "prompt_set",
    "render",
    "sample_scene",
]


lazy_package(
    __name__,
    {
        "clipguide.shapes.grammar": (
            "COLOURS",
            "FAMILIES",
            "RELATIONS",
            "SHAPES",
            "SIZES",
            "TRAIN_FAMILIES",
            "Group",
            "Prompt",
            "parse_caption",
        ),
        "clipguide.shapes.oracle": ("Detection", "Verdict", "check", "detect"),
        "clipguide.shapes.render": ("draw", "render"),
        "clipguide.shapes.scenes": (
            "IMAGE_SIZE",
            "Scene",
            "ShapeObject",
            "prompt_set",
            "sample_scene",
        ),
        "clipguide.shapes.shipped": (
            "DEFAULT_GUIDANCE_SCALE",
            "DEFAULT_STEPS",
            "SCHEDULERS",
            "load_shapes_clip",
            "load_tiny_decoder",
            "make_scheduler",
            "pipeline",
        ),
    },
)

register()  # also done by the clipguide.sources entry point; importing is enough without it
