"""Loading CLIP towers stored in transformers layout (``CLIPModel`` or single towers)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from transformers import (
    CLIPConfig,
    CLIPTextConfig,
    CLIPTextModelWithProjection,
    CLIPVisionConfig,
    CLIPVisionModelWithProjection,
)

from clipguide.model.checkpoints import (
    WeightsNotFoundError,
    build_module,
    hub_file,
    logit_scale,
    offline_hint,
    read_json_object,
    read_weights,
)
from clipguide.model.clip import CLIP
from clipguide.model.preprocess import OPENAI_MEAN, OPENAI_STD, Preprocess
from clipguide.model.registry import LoadRequest, Resolver
from clipguide.model.tokenizer import offline_tokenizer

__all__ = ["load_transformers_clip", "RESOLVERS", "REPO_RESOLVER"]

logger = logging.getLogger(__name__)


def _transformers_file(source: str, filename: str, cache_dir, required: bool = True) -> Path | None:
    if os.path.isdir(source):
        path = Path(source) / filename
        if path.is_file():
            return path
        if required:
            raise FileNotFoundError(f"folder {source!r} has no {filename}")
        return None
    try:
        return Path(hub_file(source, (filename,), cache_dir))
    except WeightsNotFoundError:
        if required:
            raise
        return None


def _transformers_preprocess(source: str, image_size: int, cache_dir) -> Preprocess:
    path = _transformers_file(source, "preprocessor_config.json", cache_dir, required=False)
    cfg = read_json_object(path) if path is not None else {}
    crop = cfg.get("crop_size", image_size)
    size = crop.get("height", image_size) if isinstance(crop, dict) else int(crop)
    resample = {0: "nearest", 2: "bilinear", 3: "bicubic"}.get(cfg.get("resample", 3), "bicubic")
    return Preprocess(
        image_size=size,
        mean=tuple(cfg.get("image_mean", OPENAI_MEAN)),  # type: ignore[arg-type]
        std=tuple(cfg.get("image_std", OPENAI_STD)),  # type: ignore[arg-type]
        interpolation=resample,
    )


def load_transformers_clip(source: str, towers, device, dtype, cache_dir) -> CLIP:
    cfg_path = _transformers_file(source, "config.json", cache_dir)
    raw = read_json_object(cfg_path)  # type: ignore[arg-type]
    kind = raw.get("model_type")
    text_cfg = vision_cfg = None
    if kind == "clip":
        full = CLIPConfig.from_dict(raw)
        text_cfg, vision_cfg = full.text_config, full.vision_config
        # a tower config read from a combined config keeps the class default (512) otherwise
        text_cfg.projection_dim = vision_cfg.projection_dim = full.projection_dim
    elif kind == "clip_text_model":
        text_cfg = CLIPTextConfig.from_dict(raw)
    elif kind == "clip_vision_model":
        vision_cfg = CLIPVisionConfig.from_dict(raw)
    else:
        raise ValueError(
            f"{cfg_path}: model_type={kind!r}; expected 'clip', "
            f"'clip_text_model' or 'clip_vision_model'"
        )
    for tower, cfg in (("text", text_cfg), ("vision", vision_cfg)):
        if tower in towers and cfg is None:
            raise ValueError(
                f"{source!r} holds no {tower} tower (model_type={kind!r}); towers={towers}"
            )
    weights = _weights_file(source, cache_dir)
    prefixes = ("logit_scale",)
    if "text" in towers:
        prefixes += ("text_model.", "text_projection.")
    if "vision" in towers:
        prefixes += ("vision_model.", "visual_projection.")
    sd = read_weights(weights, lambda k: k.startswith(prefixes), dtype)
    where = f"{str(source)!r} ({Path(weights).name} with {Path(cfg_path).name})"  # type: ignore[arg-type]
    text = vision = tok = pre = None
    if "text" in towers:
        text = build_module(CLIPTextModelWithProjection, text_cfg, sd, device, dtype, where)
        tok = _transformers_tokenizer(source, cache_dir, text_cfg.max_position_embeddings)  # type: ignore[union-attr]
    if "vision" in towers:
        vision = build_module(CLIPVisionModelWithProjection, vision_cfg, sd, device, dtype, where)
        pre = _transformers_preprocess(source, vision_cfg.image_size, cache_dir)  # type: ignore[union-attr]
    return CLIP(
        text_model=text,
        vision_model=vision,
        tokenizer=tok,
        preprocess=pre,
        name=source,
        logit_scale=logit_scale(sd),
    )


def _weights_file(source: str, cache_dir) -> Path:
    """``model.safetensors`` (or ``pytorch_model.bin``) of a folder or repo id."""
    for fname in ("model.safetensors", "pytorch_model.bin"):
        weights = _transformers_file(source, fname, cache_dir, required=False)
        if weights is not None:
            return weights
    raise WeightsNotFoundError(
        offline_hint(source)
        if not os.path.isdir(source)
        else f"folder {source!r} has no model.safetensors or pytorch_model.bin"
    )


def _transformers_tokenizer(source: str, cache_dir, context: int):
    from transformers import CLIPTokenizer

    for fname in ("tokenizer.json", "vocab.json"):
        if _transformers_file(source, fname, cache_dir, required=False) is not None:
            folder = source if os.path.isdir(source) else None
            try:
                return CLIPTokenizer.from_pretrained(folder or source, cache_dir=cache_dir)
            except OSError:
                break
    logger.info("no tokenizer files for %r; using the offline open_clip vocabulary", source)
    return offline_tokenizer(context)


def _load(source: str, request: LoadRequest) -> CLIP:
    return load_transformers_clip(
        source, request.towers, request.device, request.file_dtype, request.cache_dir
    )


def _is_repo_id(source: object) -> bool:
    return isinstance(source, str) and source.count("/") == 1 and not source.startswith((".", "/"))


RESOLVERS = (
    Resolver(
        "a transformers folder (CLIPModel or a single tower)",
        lambda s: isinstance(s, str) and os.path.isdir(s),
        _load,
    ),
)
"""Folders not in open_clip layout: asked after the open_clip folders."""

REPO_RESOLVER = Resolver(
    "a Hugging Face repo id 'org/repo' (transformers layout)", _is_repo_id, _load
)
"""Repo ids: asked last (after open_clip names)."""
