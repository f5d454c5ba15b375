"""clipguide: OpenCLIP ViT-bigG/14 for diffusers — conditioning, CLIP guidance, scoring."""

__version__ = "0.1.0"

from clipguide.cache import TEXT_CACHE, TextEncodingCache, cached_encode_text, cached_text_embeds
from clipguide.conditioning import Conditioning, encode_prompt
from clipguide.prompts import parse_prompt

__all__ = [
    "__version__",
    # conditioning
    "encode_prompt",
    "Conditioning",
    "parse_prompt",
    # shared text-encoding cache
    "TEXT_CACHE",
    "TextEncodingCache",
    "cached_encode_text",
    "cached_text_embeds",
]
