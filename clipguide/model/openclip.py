"""Resolvers for open_clip sources: model names with tags or checkpoint files, ``hf-hub:`` and
``local-dir:`` folders, and open_clip model objects, all loaded into clipguide's layout."""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from transformers import CLIPTextModelWithProjection, CLIPVisionModelWithProjection

from clipguide.model.checkpoints import (
    OPENCLIP_WEIGHTS,
    CheckpointError,
    WeightsNotFoundError,
    build_module,
    hub_file,
    logit_scale,
    read_openclip_config,
    read_weights,
)
from clipguide.model.clip import CLIP
from clipguide.model.convert import (
    openclip_to_transformers,
    text_config_from_openclip,
    vision_config_from_openclip,
)
from clipguide.model.defaults import DEFAULT_MODEL, DEFAULT_PRETRAINED
from clipguide.model.preprocess import OPENAI_MEAN, OPENAI_STD, Preprocess
from clipguide.model.registry import UNSET, LoadRequest, Resolver
from clipguide.model.tokenizer import offline_tokenizer

__all__ = [
    "DEFAULT_MODEL",
    "DEFAULT_PRETRAINED",
    "RESOLVERS",
    "load_openclip_folder",
    "name_preprocess",
]


def _keep(towers: tuple[str, ...]):
    def keep(key: str) -> bool:
        is_vision = key.startswith("visual.")
        return (is_vision and "vision" in towers) or (not is_vision and "text" in towers)

    return keep


def _build_towers(
    model_cfg: Mapping, tsd: Mapping[str, torch.Tensor] | None, request: LoadRequest, device,
    dtype, where: str,
) -> tuple[Any, Any, Any]:  # fmt: skip
    """(text tower, vision tower, tokenizer) for the towers asked, None for the others."""
    text = vision = tok = None
    if "text" in request.towers:
        text_cfg = text_config_from_openclip(model_cfg)
        text = build_module(CLIPTextModelWithProjection, text_cfg, tsd, device, dtype, where)
        tok = offline_tokenizer(text.config.max_position_embeddings)
    if "vision" in request.towers:
        vision_cfg = vision_config_from_openclip(model_cfg)
        vision = build_module(CLIPVisionModelWithProjection, vision_cfg, tsd, device, dtype, where)
    return text, vision, tok


def _clip_from_openclip(
    model_cfg: Mapping,
    sd: Mapping[str, torch.Tensor] | None,
    preprocess: Preprocess,
    request: LoadRequest,
    name: str,
    *,
    device: Any = None,
    dtype: torch.dtype | None = None,
    where: str | None = None,
) -> CLIP:
    """A CLIP from an open_clip config and state dict; ``where`` names them in errors."""
    where = where or name
    towers = request.towers
    try:
        tsd = openclip_to_transformers(sd, towers) if sd is not None else None
    except KeyError as err:
        raise CheckpointError(
            f"{where}: the weights have no {err.args[0]!r}, which an open_clip CLIP's "
            f"{'/'.join(towers)} tower needs (keys found: {sorted(sd or {})[:4]} ...)"
        ) from None
    text, vision, tok = _build_towers(model_cfg, tsd, request, device, dtype, where)
    return CLIP(
        text_model=text,
        vision_model=vision,
        tokenizer=tok,
        preprocess=preprocess,
        name=name,
        logit_scale=logit_scale(sd),
    )


def _preprocess(model_cfg: Mapping, overlay: Mapping) -> Preprocess:
    base = {"mean": OPENAI_MEAN, "std": OPENAI_STD}
    base.update({k: v for k, v in overlay.items() if v is not None})
    return Preprocess.from_dict(base, model_cfg["vision_cfg"].get("image_size", 224))


def _from_files(
    config: tuple[dict, dict], weights: Path, request: LoadRequest, name: str, where: str
):
    """A CLIP from a read ``open_clip_config.json`` and a weights file (in ``file_dtype``)."""
    cfg, model_cfg = config
    dtype = request.file_dtype
    sd = read_weights(weights, _keep(request.towers), dtype)
    pre = _preprocess(model_cfg, cfg.get("preprocess_cfg", {}))
    return _clip_from_openclip(
        model_cfg, sd, pre, request, name, device=request.device, dtype=dtype, where=where
    )


def load_openclip_folder(folder: str | Path, request: LoadRequest, name: str) -> CLIP:
    """A CLIP from an open_clip folder (``open_clip_config.json`` + weights), as asked."""
    folder = Path(folder)
    cfg_path = folder / "open_clip_config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(
            f"local-dir:{folder} has no open_clip_config.json; an open_clip folder holds "
            f"open_clip_config.json and open_clip_model.safetensors"
        )
    config = read_openclip_config(cfg_path, request.towers)  # named before a missing weights file
    weights = next((folder / w for w in OPENCLIP_WEIGHTS if (folder / w).is_file()), None)
    if weights is None:
        raise WeightsNotFoundError(
            f"local-dir:{folder} has no weights file; looked for {OPENCLIP_WEIGHTS}"
        )
    where = f"folder {str(folder)!r} ({weights.name} with {cfg_path.name})"
    return _from_files(config, weights, request, name, where)


def _tag_preprocess(tag: dict) -> dict:
    """The preprocessing a pretrained tag's config sets (``load_clip`` and
    :func:`name_preprocess` read it here alike, so the Ray engine's check agrees with loading)."""
    return {k: tag.get(k) for k in ("mean", "std", "interpolation", "resize_mode")}


def _pretrained_file(model: str, pretrained: str, cache_dir: str | None) -> tuple[str, dict]:
    """The checkpoint for a tag (downloaded or cached) or file, and the tag's preprocessing."""
    import open_clip

    if os.path.isfile(pretrained):
        return pretrained, {}
    tag = open_clip.get_pretrained_cfg(model, pretrained)
    if not tag:
        known = open_clip.list_pretrained_tags_by_model(model)
        raise ValueError(
            f"pretrained={pretrained!r} is neither a file nor a known tag for {model!r}; "
            f"known tags: {known}"
        )
    overlay = _tag_preprocess(tag)
    hub = tag["hf_hub"]  # "org/repo/" (default file name) or "org/repo/file"
    repo, filename = (hub.rstrip("/"), "") if hub.endswith("/") else os.path.split(hub)
    return hub_file(repo, (filename,) if filename else OPENCLIP_WEIGHTS, cache_dir), overlay


def name_preprocess(model: str, pretrained: str | None = None) -> Preprocess | None:
    """The preprocessing ``load_clip(model, pretrained=...)`` gives an open_clip model name,
    read from configs alone (no weights); None if ``model`` is not an open_clip name."""
    from clipguide.model.registry import load_plugins, registered_sources

    load_plugins()
    if model in registered_sources():  # load_clip asks registered names first (no open_clip)
        return None
    import open_clip

    model_cfg = open_clip.get_model_config(model)
    if model_cfg is None:
        return None
    if pretrained is None and model == DEFAULT_MODEL:
        pretrained = DEFAULT_PRETRAINED
    if pretrained is None:
        return _preprocess(model_cfg, model_cfg.get("preprocess_cfg", {}))
    if os.path.isfile(pretrained):
        return _preprocess(model_cfg, {})
    tag = open_clip.get_pretrained_cfg(model, pretrained) or {}
    overlay = _tag_preprocess(tag)
    return _preprocess(model_cfg, overlay)


def _from_name(model: str, request: LoadRequest) -> CLIP:
    import open_clip

    model_cfg = open_clip.get_model_config(model)
    if "vision" in request.towers:  # refuse towers without a transformers layout first
        vision_config_from_openclip(model_cfg)
    pretrained = request.pretrained
    if pretrained is UNSET:
        pretrained = DEFAULT_PRETRAINED if model == DEFAULT_MODEL else None
    name = f"{model}/{pretrained}"
    dtype = request.file_dtype
    place = {"device": request.device, "dtype": dtype}
    if pretrained is None:
        warnings.warn(f"load_clip({model!r}, pretrained=None): random weights", stacklevel=4)
        pre = _preprocess(model_cfg, model_cfg.get("preprocess_cfg", {}))
        return _clip_from_openclip(model_cfg, None, pre, request, name, **place)
    path, overlay = _pretrained_file(model, pretrained, request.cache_dir)
    sd = read_weights(path, _keep(request.towers), dtype)
    pre = _preprocess(model_cfg, overlay)
    where = f"checkpoint {str(path)!r} for model config {model!r}"
    return _clip_from_openclip(model_cfg, sd, pre, request, name, where=where, **place)


def _from_hub(source: str, request: LoadRequest) -> CLIP:
    repo = source.removeprefix("hf-hub:")
    cfg_file = hub_file(repo, ("open_clip_config.json",), request.cache_dir)
    weights = hub_file(repo, OPENCLIP_WEIGHTS, request.cache_dir)
    where = f"hf-hub:{repo} ({weights} with {cfg_file})"
    config = read_openclip_config(Path(cfg_file), request.towers)
    return _from_files(config, Path(weights), request, source, where)


def _from_local_dir(source: str, request: LoadRequest) -> CLIP:
    folder = Path(source.removeprefix("local-dir:")).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"{source!r}: folder {str(folder)!r} does not exist")
    return load_openclip_folder(folder, request, source)


def _model_cfg(model: Any, full: Mapping[str, torch.Tensor]) -> dict:
    """The open_clip model config of a model object, read from its modules and weights."""
    from open_clip.transformer import QuickGELU

    text_tf = getattr(model, "transformer", None) or getattr(
        getattr(model, "text", None), "transformer", None
    )
    vis = model.visual
    quick = any(isinstance(m, QuickGELU) for m in model.modules())
    prefix = "text." if any(k.startswith("text.transformer.") for k in full) else ""
    cfg: dict = {"embed_dim": int(full["visual.proj"].shape[1]), "quick_gelu": quick}
    if text_tf is not None:
        w = full[prefix + "token_embedding.weight"].shape[1]
        cfg["text_cfg"] = {
            "context_length": full[prefix + "positional_embedding"].shape[0],
            "vocab_size": full[prefix + "token_embedding.weight"].shape[0],
            "width": int(w),
            "heads": text_tf.resblocks[0].attn.num_heads,
            "layers": len(text_tf.resblocks),
            "mlp_ratio": full[prefix + "transformer.resblocks.0.mlp.c_fc.weight"].shape[0] / w,
        }
    w = full["visual.conv1.weight"].shape[0]
    size = getattr(vis, "image_size", 224)
    cfg["vision_cfg"] = {
        "image_size": size if isinstance(size, int) else int(size[0]),
        "patch_size": int(full["visual.conv1.weight"].shape[-1]),
        "width": int(w),
        "layers": len(vis.transformer.resblocks),
        "head_width": int(w // vis.transformer.resblocks[0].attn.num_heads),
        "mlp_ratio": full["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0] / w,
    }
    return cfg


def _from_model(model: Any, request: LoadRequest) -> CLIP:
    full = {k: v.detach() for k, v in model.state_dict().items()}
    keep = _keep(request.towers)
    sd = {k: v for k, v in full.items() if keep(k) or k == "logit_scale"}
    cfg = _model_cfg(model, full)
    pre = _preprocess(cfg, dict(getattr(model.visual, "preprocess_cfg", {}) or {}))
    device = request.device or next(model.parameters()).device
    name = f"open_clip@{id(model):x}"
    return _clip_from_openclip(cfg, sd, pre, request, name, device=device, dtype=request.dtype)


def _is_model_name(source: Any) -> bool:
    if not isinstance(source, str):
        return False
    import open_clip

    return open_clip.get_model_config(source) is not None


def _is_openclip_folder(source: Any) -> bool:
    return isinstance(source, str) and (Path(source) / "open_clip_config.json").is_file()


def _from_folder(source: str, request: LoadRequest) -> CLIP:
    return load_openclip_folder(Path(source), request, source)


RESOLVERS = (
    Resolver(
        "an open_clip model object",
        lambda s: hasattr(s, "visual") and hasattr(s, "encode_text"),
        _from_model,
    ),
    Resolver(
        "'local-dir:/path' (open_clip layout)",
        lambda s: isinstance(s, str) and s.startswith("local-dir:"),
        _from_local_dir,
    ),
    Resolver(
        "'hf-hub:org/repo' (open_clip layout)",
        lambda s: isinstance(s, str) and s.startswith("hf-hub:"),
        _from_hub,
    ),
    Resolver("an open_clip folder", _is_openclip_folder, _from_folder),
)
"""open_clip resolvers asked before transformers folders, in this order."""

NAME_RESOLVER = Resolver(
    f"an open_clip model name (e.g. {DEFAULT_MODEL!r}, or any registered config)",
    _is_model_name,
    _from_name,
)
"""open_clip names: asked after folders (a folder may carry a config's name)."""
