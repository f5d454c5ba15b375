"""The model layer: one CLIP object (text tower, vision tower, tokenizer, preprocessing), where
it comes from (the sources registry behind :func:`load_clip`), and what travels with it."""

from clipguide.model.checkpoints import CheckpointError, WeightsNotFoundError
from clipguide.model.clip import CLIP, TextEncoding
from clipguide.model.convert import openclip_to_transformers, transformers_to_openclip
from clipguide.model.images import UnreadableImageError, as_image_list, load_image, to_rgb
from clipguide.model.preprocess import Preprocess
from clipguide.model.registry import (
    LoadRequest,
    Resolver,
    register_resolver,
    register_source,
    register_vision_pairing,
    registered_sources,
)
from clipguide.model.sources import load_clip
from clipguide.model.text_cache import (
    TEXT_CACHE,
    TextEncodingCache,
    cached_encode_text,
    cached_text_embeds,
)
from clipguide.model.tokenizer import offline_tokenizer

__all__ = [
    "CLIP",
    "TextEncoding",
    "load_clip",
    "register_source",
    "register_resolver",
    "register_vision_pairing",
    "registered_sources",
    "LoadRequest",
    "Resolver",
    "Preprocess",
    "WeightsNotFoundError",
    "CheckpointError",
    "openclip_to_transformers",
    "transformers_to_openclip",
    "offline_tokenizer",
    "load_image",
    "as_image_list",
    "to_rgb",
    "UnreadableImageError",
    "TEXT_CACHE",
    "TextEncodingCache",
    "cached_encode_text",
    "cached_text_embeds",
]
