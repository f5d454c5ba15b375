"""CLIP-gradient guidance during sampling: pure maths plus thin diffusers adapters."""

from .decode import decode_latents
from .guidance import CLIPGuidance, GuidanceSettings
from .linear_decoder import LinearLatentDecoder
from .loss import cosine, make_views, spherical_distance
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
from .update import eps_change

__all__ = [
    "CLIPGuidance",
    "CLIPGuidanceLoopStep",
    "EvaluationCounter",
    "add_to_modular_sdxl",
    "GuidanceSettings",
    "LinearLatentDecoder",
    "NoiseLevel",
    "cosine",
    "decode_latents",
    "eps_change",
    "make_views",
    "noise_level",
    "output_change_from_eps",
    "parameterisation",
    "predict_x0",
    "spherical_distance",
    "split_model_output",
    "step_position",
]
