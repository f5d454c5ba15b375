"""CLIP-gradient guidance during sampling: pure maths plus thin diffusers adapters."""

from typing import TYPE_CHECKING

from clipguide._lazy import lazy_package

if TYPE_CHECKING:  # imported on first use (clipguide._lazy)
    from .decode import decode_latents
    from .guidance import CLIPGuidance
    from .linear_decoder import LinearLatentDecoder
    from .loss import make_views, spherical_distance
    from .modular import CLIPGuidanceLoopStep, add_to_modular_sdxl
    from .schedulers import (
        EvaluationCounter,
        NoiseLevel,
        noise_level,
        output_change_from_eps,
        parameterisation,
        predict_x0,
        split_model_output,
        step_position,
    )
    from .settings import GuidanceSettings
    from .step import DenoiserStep, guided_change
    from .update import eps_change

__all__ = [
    "CLIPGuidance",
    "CLIPGuidanceLoopStep",
    "DenoiserStep",
    "EvaluationCounter",
    "add_to_modular_sdxl",
    "GuidanceSettings",
    "LinearLatentDecoder",
    "NoiseLevel",
    "decode_latents",
    "eps_change",
    "guided_change",
    "make_views",
    "noise_level",
    "output_change_from_eps",
    "parameterisation",
    "predict_x0",
    "spherical_distance",
    "split_model_output",
    "step_position",
]

lazy_package(
    __name__,
    {
        "clipguide.guidance.decode": ("decode_latents",),
        "clipguide.guidance.guidance": ("CLIPGuidance",),
        "clipguide.guidance.linear_decoder": ("LinearLatentDecoder",),
        "clipguide.guidance.loss": ("make_views", "spherical_distance"),
        "clipguide.guidance.modular": ("CLIPGuidanceLoopStep", "add_to_modular_sdxl"),
        "clipguide.guidance.schedulers": (
            "EvaluationCounter",
            "NoiseLevel",
            "noise_level",
            "output_change_from_eps",
            "parameterisation",
            "predict_x0",
            "split_model_output",
            "step_position",
        ),
        "clipguide.guidance.settings": ("GuidanceSettings",),
        "clipguide.guidance.step": ("DenoiserStep", "guided_change"),
        "clipguide.guidance.update": ("eps_change",),
    },
)
