"""clipguide: OpenCLIP ViT-bigG/14 for diffusers, one CLIP used three ways.

``load_clip`` gives the CLIP (``clipguide.model``); ``encode_prompt`` turns prompts into a
pipeline's embeddings and ``RegionalPrompt`` gives boxes of the image their own prompts
(``clipguide.conditioning``); ``CLIPGuidance`` pushes sampling towards the
prompt (``clipguide.guidance``); ``CLIPScorer``, ``best_of_n`` and ``contact_sheet`` score and
pick images after sampling (``clipguide.scoring``). Everything else is importable from its
module.
"""

from typing import TYPE_CHECKING

from clipguide._lazy import lazy_package

if TYPE_CHECKING:  # imported on first use (clipguide._lazy): ``import clipguide`` loads no torch
    from clipguide.conditioning import Conditioning, Region, RegionalPrompt, encode_prompt
    from clipguide.guidance import CLIPGuidance, GuidanceSettings
    from clipguide.model import CLIP, load_clip, load_image
    from clipguide.scoring import BestOfN, CLIPScorer, Ranking, best_of_n, contact_sheet

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "load_clip",
    "CLIP",
    "load_image",
    "encode_prompt",
    "Conditioning",
    "Region",
    "RegionalPrompt",
    "CLIPGuidance",
    "GuidanceSettings",
    "CLIPScorer",
    "Ranking",
    "best_of_n",
    "BestOfN",
    "contact_sheet",
]

lazy_package(
    __name__,
    {
        "clipguide.conditioning": ("Conditioning", "Region", "RegionalPrompt", "encode_prompt"),
        "clipguide.guidance": ("CLIPGuidance", "GuidanceSettings"),
        "clipguide.model": ("CLIP", "load_clip", "load_image"),
        "clipguide.scoring": ("BestOfN", "CLIPScorer", "Ranking", "best_of_n", "contact_sheet"),
    },
)
