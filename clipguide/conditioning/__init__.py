"""Conditioning: prompt embeddings for diffusers pipelines from the CLIP's text tower, with
long prompts (chunked) and per-token weights (A1111's syntax).

``syntax`` parses the weight syntax, ``prompts`` cuts tokens into chunks, ``encode`` runs the
text towers (through the shared text cache) and returns a :class:`Conditioning`. ``regions``
conditions parts of the image on their own prompts (:class:`RegionalPrompt`).
"""

from clipguide.conditioning.encode import Conditioning, encode_prompt
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
]
