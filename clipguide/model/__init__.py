"""The model layer: one CLIP object (text tower, vision tower, tokenizer, preprocessing), where
it comes from (the sources registry behind :func:`load_clip`), and what travels with it."""

from typing import TYPE_CHECKING

from clipguide._lazy import lazy_package

if TYPE_CHECKING:  # imported on first use (clipguide._lazy)
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

lazy_package(
    __name__,
    {
        "clipguide.model.checkpoints": ("CheckpointError", "WeightsNotFoundError"),
        "clipguide.model.clip": ("CLIP", "TextEncoding"),
        "clipguide.model.convert": ("openclip_to_transformers", "transformers_to_openclip"),
        "clipguide.model.images": ("UnreadableImageError", "as_image_list", "load_image", "to_rgb"),
        "clipguide.model.preprocess": ("Preprocess",),
        "clipguide.model.registry": (
            "LoadRequest",
            "Resolver",
            "register_source",
            "register_vision_pairing",
            "registered_sources",
        ),
        # the same function, read through sources: the built-in resolvers register first, so a
        # third party's kind is asked after them (or before with first=True), as it always was
        "clipguide.model.sources": ("load_clip", "register_resolver"),
        "clipguide.model.text_cache": (
            "TEXT_CACHE",
            "TextEncodingCache",
            "cached_encode_text",
            "cached_text_embeds",
        ),
        "clipguide.model.tokenizer": ("offline_tokenizer",),
    },
)
