"""``load_clip``: one CLIP object from open_clip names/tags, ``hf-hub:``/``local-dir:``,
transformers-format folders or repo ids, open_clip model objects, or a diffusers pipeline."""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from transformers import (
    CLIPTextModelWithProjection,
    CLIPVisionModelWithProjection,
)

from clipguide.checkpoints import (
    OPENCLIP_WEIGHTS,
    CheckpointError,
    WeightsNotFoundError,
    build_module,
    hub_file,
    read_openclip_config,
    read_weights,
)
from clipguide.clip import CLIP
from clipguide.convert import (
    openclip_to_transformers,
    text_config_from_openclip,
    vision_config_from_openclip,
)
from clipguide.devices import check_device
from clipguide.preprocess import OPENAI_MEAN, OPENAI_STD, Preprocess
from clipguide.tokenizer import offline_tokenizer
from clipguide.transformers_layout import load_transformers_clip

__all__ = [
    "load_clip",
    "check_device",
    "WeightsNotFoundError",
    "DEFAULT_MODEL",
    "DEFAULT_PRETRAINED",
]

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "ViT-bigG-14"
DEFAULT_PRETRAINED = "laion2b_s39b_b160k"
TOWERS = ("text", "vision")
_SHIPPED_DIR = Path(__file__).parent / "shapes" / "weights"
SHIPPED = ("shapes", "shapes-judge")
_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def _dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    if dtype is None:
        return None
    if isinstance(dtype, torch.dtype) and dtype.is_floating_point:
        return dtype
    if isinstance(dtype, str) and dtype in _DTYPES:
        return _DTYPES[dtype]
    raise ValueError(
        f"dtype={dtype!r} is not supported; use one of {list(_DTYPES)} or a floating-point "
        f"torch.dtype (torch.float32, torch.float16, torch.bfloat16)"
    )


def _keep_openclip(towers: tuple[str, ...]):
    def keep(key: str) -> bool:
        is_vision = key.startswith("visual.")
        return (is_vision and "vision" in towers) or (not is_vision and "text" in towers)

    return keep


def _clip_from_openclip(
    model_cfg: Mapping,
    sd: Mapping[str, torch.Tensor] | None,
    preprocess: Preprocess,
    towers: tuple[str, ...],
    device,
    dtype,
    name: str,
    where: str | None = None,
) -> CLIP:
    """A CLIP from an open_clip config and state dict; ``where`` names them in errors."""
    where = where or name
    try:
        tsd = openclip_to_transformers(sd, towers) if sd is not None else None
    except KeyError as err:
        raise CheckpointError(
            f"{where}: the weights have no {err.args[0]!r}, which an open_clip CLIP's "
            f"{'/'.join(towers)} tower needs (keys found: {sorted(sd or {})[:4]} ...)"
        ) from None
    text = vision = tok = None
    if "text" in towers:
        text = build_module(
            CLIPTextModelWithProjection,
            text_config_from_openclip(model_cfg),
            tsd,
            device,
            dtype,
            source=where,
        )
        tok = offline_tokenizer(text.config.max_position_embeddings)
    if "vision" in towers:
        vision = build_module(
            CLIPVisionModelWithProjection,
            vision_config_from_openclip(model_cfg),
            tsd,
            device,
            dtype,
            source=where,
        )
    scale = (
        float(sd["logit_scale"].float().exp()) if sd is not None and "logit_scale" in sd else None
    )
    return CLIP(
        text_model=text,
        vision_model=vision,
        tokenizer=tok,
        preprocess=preprocess,
        name=name,
        logit_scale=scale,
    )


def _openclip_preprocess(model_cfg: Mapping, overlay: Mapping) -> Preprocess:
    base = {"mean": OPENAI_MEAN, "std": OPENAI_STD}
    base.update({k: v for k, v in overlay.items() if v is not None})
    return Preprocess.from_dict(base, model_cfg["vision_cfg"].get("image_size", 224))


def _from_openclip_dir(folder: Path, towers, device, dtype, name) -> CLIP:
    cfg_path = folder / "open_clip_config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(
            f"local-dir:{folder} has no open_clip_config.json; an open_clip folder holds "
            f"open_clip_config.json and open_clip_model.safetensors"
        )
    cfg, model_cfg = read_openclip_config(cfg_path, towers)
    weights = next((folder / w for w in OPENCLIP_WEIGHTS if (folder / w).is_file()), None)
    if weights is None:
        raise WeightsNotFoundError(
            f"local-dir:{folder} has no weights file; looked for {OPENCLIP_WEIGHTS}"
        )
    sd = read_weights(weights, _keep_openclip(towers), dtype)
    pre = _openclip_preprocess(model_cfg, cfg.get("preprocess_cfg", {}))
    where = f"folder {str(folder)!r} ({weights.name} with {cfg_path.name})"
    return _clip_from_openclip(model_cfg, sd, pre, towers, device, dtype, name, where)


def _from_openclip_name(
    model: str, pretrained: str | None, towers, device, dtype, cache_dir
) -> CLIP:
    import open_clip

    model_cfg = open_clip.get_model_config(model)
    name = f"{model}/{pretrained}"
    if pretrained is None:
        warnings.warn(f"load_clip({model!r}, pretrained=None): random weights", stacklevel=3)
        pre = _openclip_preprocess(model_cfg, model_cfg.get("preprocess_cfg", {}))
        return _clip_from_openclip(model_cfg, None, pre, towers, device, dtype, name)
    if os.path.isfile(pretrained):
        path, overlay = pretrained, {}
    else:
        tag = open_clip.get_pretrained_cfg(model, pretrained)
        if not tag:
            known = open_clip.list_pretrained_tags_by_model(model)
            raise ValueError(
                f"pretrained={pretrained!r} is neither a file nor a known tag for {model!r}; "
                f"known tags: {known}"
            )
        overlay = {k: tag.get(k) for k in ("mean", "std", "interpolation", "resize_mode")}
        hub = tag["hf_hub"]  # "org/repo/" (default file name) or "org/repo/file"
        repo, filename = (hub.rstrip("/"), "") if hub.endswith("/") else os.path.split(hub)
        path = hub_file(repo, (filename,) if filename else OPENCLIP_WEIGHTS, cache_dir)
    sd = read_weights(path, _keep_openclip(towers), dtype)
    pre = _openclip_preprocess(model_cfg, overlay)
    where = f"checkpoint {str(path)!r} for model config {model!r}"
    return _clip_from_openclip(model_cfg, sd, pre, towers, device, dtype, name, where)


def _from_openclip_hub(repo: str, towers, device, dtype, cache_dir) -> CLIP:
    cfg_file = hub_file(repo, ("open_clip_config.json",), cache_dir)
    weights = hub_file(repo, OPENCLIP_WEIGHTS, cache_dir)
    cfg, model_cfg = read_openclip_config(Path(cfg_file), towers)
    sd = read_weights(weights, _keep_openclip(towers), dtype)
    pre = _openclip_preprocess(model_cfg, cfg.get("preprocess_cfg", {}))
    where = f"hf-hub:{repo} ({weights} with {cfg_file})"
    return _clip_from_openclip(model_cfg, sd, pre, towers, device, dtype, f"hf-hub:{repo}", where)


# -- other sources ------------------------------------------------------------------------------
def _is_pipeline(obj: Any) -> bool:
    return hasattr(obj, "components") and (
        hasattr(obj, "text_encoder_2") or hasattr(obj, "text_encoder")
    )


def _from_pipeline(pipe, vision, towers, device, dtype, cache_dir) -> CLIP:
    """The pipeline's text tower plus a vision tower that follows the pipeline.

    The vision tower is created where the text tower is (on the CPU when that tower is
    offloaded to ``meta``) in its dtype; unless ``device``/``dtype`` were given, it then follows
    the pipeline (``CLIP.follow``): its execution device and text tower dtype at each use.
    """
    text = getattr(pipe, "text_encoder_2", None) or getattr(pipe, "text_encoder", None)
    tok = getattr(pipe, "tokenizer_2", None) or getattr(pipe, "tokenizer", None)
    if not isinstance(text, CLIPTextModelWithProjection) or tok is None:
        raise ValueError(
            f"{type(pipe).__name__} has no bigG-style text tower: expected text_encoder_2 (or "
            f"text_encoder) to be a CLIPTextModelWithProjection with its tokenizer; got "
            f"{type(text).__name__}"
        )
    vis = None
    if "vision" in towers:
        if vision is None:
            vision = getattr(pipe, "clipguide_vision_source", None) or DEFAULT_MODEL
        home = text.device if text.device.type != "meta" else torch.device("cpu")
        vis = (
            vision
            if isinstance(vision, CLIP)
            else load_clip(
                vision,
                towers=("vision",),
                device=device or home,
                dtype=dtype or text.dtype,
                cache_dir=cache_dir,
            )
        )
    clip = CLIP(
        text_model=text,
        vision_model=vis.vision_model if vis is not None else None,
        tokenizer=tok,
        preprocess=vis.preprocess if vis is not None else None,
        name=f"{type(pipe).__name__}@{id(pipe):x}+{vis.name if vis is not None else 'text'}",
        logit_scale=vis.logit_scale if vis is not None else None,
    )
    return clip.follow(pipe, device=device is None, dtype=dtype is None)


def _from_openclip_model(model, towers, device, dtype) -> CLIP:
    from open_clip.transformer import QuickGELU

    full = {k: v.detach() for k, v in model.state_dict().items()}
    keep = _keep_openclip(towers)
    sd = {k: v for k, v in full.items() if keep(k) or k == "logit_scale"}
    text_tf = getattr(model, "transformer", None) or getattr(
        getattr(model, "text", None), "transformer", None
    )
    vis = model.visual
    quick = any(isinstance(m, QuickGELU) for m in model.modules())
    text_prefix = "text." if any(k.startswith("text.transformer.") for k in full) else ""
    cfg: dict = {"embed_dim": int(full["visual.proj"].shape[1]), "quick_gelu": quick}
    if text_tf is not None:
        w = full[text_prefix + "token_embedding.weight"].shape[1]
        cfg["text_cfg"] = {
            "context_length": full[text_prefix + "positional_embedding"].shape[0],
            "vocab_size": full[text_prefix + "token_embedding.weight"].shape[0],
            "width": int(w),
            "heads": text_tf.resblocks[0].attn.num_heads,
            "layers": len(text_tf.resblocks),
            "mlp_ratio": full[text_prefix + "transformer.resblocks.0.mlp.c_fc.weight"].shape[0] / w,
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
    pre_cfg = dict(getattr(vis, "preprocess_cfg", {}) or {})
    pre = _openclip_preprocess(cfg, pre_cfg)
    dev = device or next(model.parameters()).device
    return _clip_from_openclip(cfg, sd, pre, towers, dev, dtype, f"open_clip@{id(model):x}")


def _check_towers(towers) -> tuple[str, ...]:
    if isinstance(towers, str):
        towers = (towers,)
    towers = tuple(towers)
    if not towers or any(t not in TOWERS for t in towers):
        raise ValueError(f"towers={towers!r}: choose a non-empty subset of {TOWERS}")
    return towers


_UNSET: Any = object()


def load_clip(
    source: Any = DEFAULT_MODEL,
    pretrained: str | None = _UNSET,
    *,
    towers: tuple[str, ...] | str = TOWERS,
    device: torch.device | str | None = None,
    dtype: torch.dtype | str | None = None,
    vision: Any = None,
    cache_dir: str | None = None,
) -> CLIP:
    """Load a CLIP (bigG by default) from wherever it is kept.

    Args:
        source: open_clip model name (``"ViT-bigG-14"``, or any registered config);
            ``"hf-hub:org/repo"`` or ``"local-dir:/folder"`` (open_clip layout);
            a transformers-layout folder or repo id (``CLIPModel`` or a single tower);
            ``"shapes"`` / ``"shapes-judge"`` (the shipped micro-world models);
            an open_clip model object; a loaded ``CLIP`` (returned as is);
            or a diffusers pipeline, whose ``text_encoder_2``/``tokenizer_2`` are reused.
        pretrained: open_clip tag or checkpoint file for a model name (default
            ``"laion2b_s39b_b160k"`` for ViT-bigG-14); None gives random weights.
        towers: which towers to load: ``("text",)``, ``("vision",)`` or both.
        device, dtype: where and in which precision (fp32/fp16/bf16) to put new weights;
            weights read from files default to fp32 whatever their stored precision (as
            open_clip does), a pipeline's vision tower to its text tower's dtype; without
            them a pipeline's vision tower follows the pipeline's device and dtype at each use.
        vision: with a pipeline source, where the vision tower comes from (any source above).
    """
    towers = _check_towers(towers)
    dtype = _dtype(dtype)
    device = check_device(device)
    if isinstance(source, CLIP):
        return source.to(device, dtype) if (device or dtype) else source
    if _is_pipeline(source):
        return _from_pipeline(source, vision, towers, device, dtype, cache_dir)
    if hasattr(source, "visual") and hasattr(source, "encode_text"):
        return _from_openclip_model(source, towers, device, dtype)
    dtype = dtype or torch.float32  # the sources below read weights from files
    if isinstance(source, Path):
        source = str(source)
    if not isinstance(source, str):
        raise TypeError(
            f"source must be a model name, hf-hub:/local-dir: id, folder, repo id, open_clip "
            f"model, CLIP or diffusers pipeline; got {type(source).__name__}"
        )
    if source in SHIPPED:
        folder = _SHIPPED_DIR / source
        if not folder.is_dir():
            raise WeightsNotFoundError(
                f"the shipped micro-world model {source!r} is missing at {folder}"
            )
        return _from_openclip_dir(folder, towers, device, dtype, source)
    if source.startswith("local-dir:"):
        folder = Path(source.removeprefix("local-dir:")).expanduser()
        if not folder.is_dir():
            raise FileNotFoundError(f"{source!r}: folder {str(folder)!r} does not exist")
        return _from_openclip_dir(folder, towers, device, dtype, source)
    if source.startswith("hf-hub:"):
        return _from_openclip_hub(source.removeprefix("hf-hub:"), towers, device, dtype, cache_dir)
    if os.path.isdir(source):
        if (Path(source) / "open_clip_config.json").is_file():
            return _from_openclip_dir(Path(source), towers, device, dtype, source)
        return load_transformers_clip(source, towers, device, dtype, cache_dir)
    import open_clip

    from clipguide.testing import register_model_configs

    register_model_configs()
    if open_clip.get_model_config(source) is not None:
        if pretrained is _UNSET:
            pretrained = DEFAULT_PRETRAINED if source == DEFAULT_MODEL else None
        return _from_openclip_name(source, pretrained, towers, device, dtype, cache_dir)
    if source.count("/") == 1 and not source.startswith((".", "/")):
        return load_transformers_clip(source, towers, device, dtype, cache_dir)
    raise ValueError(
        f"source={source!r} is not an open_clip model name, a folder, or a repo id. "
        f"Accepted: open_clip names (e.g. {DEFAULT_MODEL!r}; {len(open_clip.list_models())} "
        f"built in), 'hf-hub:org/repo', 'local-dir:/path', a transformers folder or "
        f"'org/repo', {list(SHIPPED)}, an open_clip model, a diffusers pipeline."
    )
