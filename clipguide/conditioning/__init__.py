"""Conditioning: prompt embeddings for diffusers pipelines from the CLIP's text tower, with
long prompts (chunked) and per-token weights (A1111's syntax).

``syntax`` parses the weight syntax, ``prompts`` cuts tokens into chunks, ``encode`` runs the
text towers (through the shared text cache) and returns a :class:`Conditioning`. ``regions``
conditions parts of the image on their own prompts (:class:`RegionalPrompt`); ``layouts``
reads boxes for them from the prompt (:func:`layouts_from_prompt`) and ``layout_policy`` says
which kinds of prompt use them, and how (:data:`DEFAULT_POLICY`).
"""

from typing import TYPE_CHECKING

from clipguide._lazy import lazy_package

if TYPE_CHECKING:  # imported on first use (clipguide._lazy)
    from clipguide.conditioning.encode import Conditioning, encode_prompt
    from clipguide.conditioning.layout_policy import DEFAULT_POLICY, LayoutUse, plan_candidates
    from clipguide.conditioning.layouts import Layout, layouts_from_prompt
    from clipguide.conditioning.prompts import tokenize_prompt
    from clipguide.conditioning.region_masks import region_masks
    from clipguide.conditioning.regions import Region, RegionalPrompt, parse_region
    from clipguide.conditioning.syntax import PromptSyntaxWarning, parse_prompt

__all__ = [
    "encode_prompt",
    "Conditioning",
    "parse_prompt",
    "tokenize_prompt",
    "PromptSyntaxWarning",
    "Region",
    "RegionalPrompt",
    "parse_region",
    "region_masks",
    "Layout",
    "layouts_from_prompt",
    "LayoutUse",
    "DEFAULT_POLICY",
    "plan_candidates",
]

lazy_package(
    __name__,
    {
        "clipguide.conditioning.encode": ("Conditioning", "encode_prompt"),
        "clipguide.conditioning.layout_policy": ("DEFAULT_POLICY", "LayoutUse", "plan_candidates"),
        "clipguide.conditioning.layouts": ("Layout", "layouts_from_prompt"),
        "clipguide.conditioning.prompts": ("tokenize_prompt",),
        "clipguide.conditioning.region_masks": ("region_masks",),
        "clipguide.conditioning.regions": ("Region", "RegionalPrompt", "parse_region"),
        "clipguide.conditioning.syntax": ("PromptSyntaxWarning", "parse_prompt"),
    },
)
