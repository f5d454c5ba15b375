"""clipguide: OpenCLIP ViT-bigG/14 for diffusers — conditioning, CLIP guidance, scoring."""

from clipguide.conditioning import Conditioning, encode_prompt
from clipguide.conditioning.prompts import parse_prompt, tokenize_prompt
from clipguide.guidance import CLIPGuidance, GuidanceSettings, decode_latents, predict_x0
from clipguide.model import WeightsNotFoundError, load_clip
from clipguide.model.clip import CLIP, TextEncoding
from clipguide.model.convert import openclip_to_transformers, transformers_to_openclip
from clipguide.model.images import UnreadableImageError, as_image_list, load_image, to_rgb
from clipguide.model.preprocess import Preprocess
from clipguide.model.text_cache import (
    TEXT_CACHE,
    TextEncodingCache,
    cached_encode_text,
    cached_text_embeds,
)
from clipguide.model.tokenizer import offline_tokenizer
from clipguide.scoring import (
    HESSEL_SCALE,
    CLIPScorer,
    Ranking,
    RobustScores,
    clip_score,
    cosine,
    cosine_matrix,
    rank,
)
from clipguide.scoring.best_of_n import BestOfN, best_of_n
from clipguide.scoring.sheet import contact_sheet

__version__ = "0.1.0"

__all__ = [
    "__version__",
    # model layer
    "load_clip",
    "CLIP",
    "TextEncoding",
    "Preprocess",
    "WeightsNotFoundError",
    "offline_tokenizer",
    "openclip_to_transformers",
    "transformers_to_openclip",
    # conditioning
    "encode_prompt",
    "Conditioning",
    "parse_prompt",
    "tokenize_prompt",
    # shared text-encoding cache
    "TEXT_CACHE",
    "TextEncodingCache",
    "cached_encode_text",
    "cached_text_embeds",
    # guidance
    "CLIPGuidance",
    "decode_latents",
    "GuidanceSettings",
    "predict_x0",
    # scoring and reranking
    "CLIPScorer",
    "cosine",
    "cosine_matrix",
    "clip_score",
    "rank",
    "Ranking",
    "RobustScores",
    "HESSEL_SCALE",
    "best_of_n",
    "BestOfN",
    "contact_sheet",
    # image inputs
    "as_image_list",
    "load_image",
    "to_rgb",
    "UnreadableImageError",
]
