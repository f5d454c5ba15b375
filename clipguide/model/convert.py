"""Exact conversion between open_clip and transformers CLIP layouts (both towers, both ways).

open_clip keeps fused attention (``in_proj_weight`` = [q; k; v]), projections as plain matrices
applied as ``x @ proj`` and its own layer names; transformers splits q/k/v, stores projections
as ``nn.Linear`` weights (the transpose) and renames the norms and MLP. Only the bigG family of
open_clip options is mapped (pre-norm ViT with CLS pooling, causal text transformer pooled at the
end token); anything else is refused with the option named.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from transformers import CLIPConfig, CLIPTextConfig, CLIPVisionConfig

__all__ = [
    "text_config_from_openclip",
    "vision_config_from_openclip",
    "clip_config_from_openclip",
    "openclip_config_from_transformers",
    "openclip_to_transformers",
    "transformers_to_openclip",
]

Tensor = torch.Tensor

# per-block renames: open_clip suffix -> transformers suffix (q/k/v handled apart)
_BLOCK = {
    "ln_1.weight": "layer_norm1.weight",
    "ln_1.bias": "layer_norm1.bias",
    "ln_2.weight": "layer_norm2.weight",
    "ln_2.bias": "layer_norm2.bias",
    "attn.out_proj.weight": "self_attn.out_proj.weight",
    "attn.out_proj.bias": "self_attn.out_proj.bias",
    "mlp.c_fc.weight": "mlp.fc1.weight",
    "mlp.c_fc.bias": "mlp.fc1.bias",
    "mlp.c_proj.weight": "mlp.fc2.weight",
    "mlp.c_proj.bias": "mlp.fc2.bias",
}
_TEXT = {
    "token_embedding.weight": "text_model.embeddings.token_embedding.weight",
    "positional_embedding": "text_model.embeddings.position_embedding.weight",
    "ln_final.weight": "text_model.final_layer_norm.weight",
    "ln_final.bias": "text_model.final_layer_norm.bias",
}
_VISION = {
    "visual.class_embedding": "vision_model.embeddings.class_embedding",
    "visual.conv1.weight": "vision_model.embeddings.patch_embedding.weight",
    "visual.positional_embedding": "vision_model.embeddings.position_embedding.weight",
    "visual.ln_pre.weight": "vision_model.pre_layrnorm.weight",
    "visual.ln_pre.bias": "vision_model.pre_layrnorm.bias",
    "visual.ln_post.weight": "vision_model.post_layernorm.weight",
    "visual.ln_post.bias": "vision_model.post_layernorm.bias",
}

# open_clip options that change the maths in ways a transformers CLIP cannot express
_VISION_REFUSED = {
    "timm_model_name": None,
    "ls_init_value": None,
    "attentional_pool": False,
    "no_ln_pre": False,
    "global_average_pool": False,
    "pool_type": "tok",
    "proj_bias": False,
    "pos_embed_type": "learnable",
}
_TEXT_REFUSED = {
    "hf_model_name": None,
    "ls_init_value": None,
    "embed_cls": False,
    "no_causal_mask": False,
    "pool_type": "argmax",
    "proj_bias": False,
    "pad_id": 0,
}


def _check_supported(cfg: Mapping, refused: Mapping, tower: str) -> None:
    for key, ok in refused.items():
        if key in cfg and cfg[key] != ok and cfg[key] is not None:
            raise ValueError(
                f"open_clip {tower}_cfg option {key}={cfg[key]!r} has no transformers CLIP "
                f"equivalent; supported: {key}={ok!r} (the ViT-bigG-14 family)."
            )


def _act(model_cfg: Mapping) -> str:
    return "quick_gelu" if model_cfg.get("quick_gelu", False) else "gelu"


def text_config_from_openclip(model_cfg: Mapping) -> CLIPTextConfig:
    """transformers ``CLIPTextConfig`` for an open_clip model config (``ViT-bigG-14.json`` form)."""
    t = dict(model_cfg["text_cfg"])
    _check_supported(t, _TEXT_REFUSED, "text")
    width = t.get("width", 512)
    return CLIPTextConfig(
        vocab_size=t.get("vocab_size", 49408),
        hidden_size=width,
        intermediate_size=int(width * t.get("mlp_ratio", 4.0)),
        num_hidden_layers=t.get("layers", 12),
        num_attention_heads=t.get("heads", 8),
        max_position_embeddings=t.get("context_length", 77),
        projection_dim=model_cfg["embed_dim"],
        hidden_act=_act(model_cfg),
        layer_norm_eps=1e-5,
        # SDXL's text_encoder_2 convention: eos_token_id=2 selects argmax pooling, as open_clip.
        bos_token_id=0,
        eos_token_id=2,
        pad_token_id=1,
    )


def vision_config_from_openclip(model_cfg: Mapping) -> CLIPVisionConfig:
    """transformers ``CLIPVisionConfig`` for an open_clip model config."""
    v = dict(model_cfg["vision_cfg"])
    _check_supported(v, _VISION_REFUSED, "vision")
    if not isinstance(v.get("layers", 12), int):  # ResNet towers list layers per stage
        raise ValueError(
            f"open_clip vision_cfg layers={v['layers']!r}: only ViT vision towers (an int "
            "number of layers) have a transformers CLIP equivalent; ResNet (RN*) ones do not."
        )
    width = v.get("width", 768)
    size = v.get("image_size", 224)
    if not isinstance(size, int):
        if len(set(size)) != 1:
            raise ValueError(f"vision_cfg image_size={size!r}: only square images are supported")
        size = size[0]
    return CLIPVisionConfig(
        hidden_size=width,
        intermediate_size=int(width * v.get("mlp_ratio", 4.0)),
        num_hidden_layers=v.get("layers", 12),
        num_attention_heads=width // v.get("head_width", 64),
        image_size=size,
        patch_size=v.get("patch_size", 16),
        projection_dim=model_cfg["embed_dim"],
        hidden_act=_act(model_cfg),
        layer_norm_eps=1e-5,
    )


def clip_config_from_openclip(model_cfg: Mapping) -> CLIPConfig:
    """A full transformers ``CLIPConfig`` (both towers) for an open_clip model config."""
    return CLIPConfig(
        text_config=text_config_from_openclip(model_cfg).to_dict(),
        vision_config=vision_config_from_openclip(model_cfg).to_dict(),
        projection_dim=model_cfg["embed_dim"],
    )


def openclip_config_from_transformers(
    text_config: CLIPTextConfig | None, vision_config: CLIPVisionConfig | None
) -> dict:
    """open_clip model config (``model_cfg``) equivalent to the given transformers tower configs."""
    cfg: dict = {}
    for c in (text_config, vision_config):
        if c is not None:
            cfg["embed_dim"] = c.projection_dim
            if c.hidden_act == "quick_gelu":
                cfg["quick_gelu"] = True
    if text_config is not None:
        cfg["text_cfg"] = {
            "context_length": text_config.max_position_embeddings,
            "vocab_size": text_config.vocab_size,
            "width": text_config.hidden_size,
            "heads": text_config.num_attention_heads,
            "layers": text_config.num_hidden_layers,
            "mlp_ratio": text_config.intermediate_size / text_config.hidden_size,
        }
    if vision_config is not None:
        w = vision_config.hidden_size
        cfg["vision_cfg"] = {
            "image_size": vision_config.image_size,
            "layers": vision_config.num_hidden_layers,
            "width": w,
            "head_width": w // vision_config.num_attention_heads,
            "mlp_ratio": vision_config.intermediate_size / w,
            "patch_size": vision_config.patch_size,
        }
    return cfg


def _blocks_to_transformers(sd: Mapping[str, Tensor], src: str, dst: str) -> dict[str, Tensor]:
    out: dict[str, Tensor] = {}
    for key, value in sd.items():
        if not key.startswith(src):
            continue
        idx, rest = key[len(src) :].split(".", 1)
        base = f"{dst}{idx}."
        if rest in ("attn.in_proj_weight", "attn.in_proj_bias"):
            kind = rest.rsplit("_", 1)[1]
            for name, part in zip(("q", "k", "v"), value.chunk(3, dim=0), strict=True):
                out[f"{base}self_attn.{name}_proj.{kind}"] = part
        elif rest in _BLOCK:
            out[base + _BLOCK[rest]] = value
        else:
            raise KeyError(f"unexpected open_clip transformer key {key!r}")
    return out


def _blocks_to_openclip(sd: Mapping[str, Tensor], src: str, dst: str) -> dict[str, Tensor]:
    inverse = {v: k for k, v in _BLOCK.items()}
    out: dict[str, Tensor] = {}
    layers = sorted({int(k[len(src) :].split(".", 1)[0]) for k in sd if k.startswith(src)})
    for i in layers:
        base = f"{src}{i}."
        for kind in ("weight", "bias"):
            qkv = [sd[f"{base}self_attn.{n}_proj.{kind}"] for n in ("q", "k", "v")]
            out[f"{dst}{i}.attn.in_proj_{kind}"] = torch.cat(qkv, dim=0)
        for t_name, oc_name in inverse.items():
            out[f"{dst}{i}.{oc_name}"] = sd[base + t_name]
    return out


def _text_prefix(sd: Mapping[str, Tensor]) -> str:
    """open_clip ``CLIP`` keeps text keys at the root; ``CustomTextCLIP`` under ``text.``."""
    return "text." if any(k.startswith("text.transformer.") for k in sd) else ""


def openclip_to_transformers(
    sd: Mapping[str, Tensor], towers: tuple[str, ...] = ("text", "vision")
) -> dict[str, Tensor]:
    """Map an open_clip state dict to transformers ``CLIPModel`` keys for the towers asked.

    The result loads into ``CLIPTextModelWithProjection`` / ``CLIPVisionModelWithProjection``
    (their keys are the matching subsets of ``CLIPModel``'s) and into ``CLIPModel`` itself.
    """
    out: dict[str, Tensor] = {}
    if "text" in towers:
        p = _text_prefix(sd)
        for k, v in _TEXT.items():
            out[v] = sd[p + k]
        out["text_projection.weight"] = sd[p + "text_projection"].t()
        out.update(
            _blocks_to_transformers(sd, f"{p}transformer.resblocks.", "text_model.encoder.layers.")
        )
    if "vision" in towers:
        for k, v in _VISION.items():
            out[v] = sd[k]
        out["visual_projection.weight"] = sd["visual.proj"].t()
        out.update(
            _blocks_to_transformers(
                sd, "visual.transformer.resblocks.", "vision_model.encoder.layers."
            )
        )
    if "logit_scale" in sd and set(towers) >= {"text", "vision"}:
        out["logit_scale"] = sd["logit_scale"].reshape(())
    return {k: v.contiguous() for k, v in out.items()}


def transformers_to_openclip(sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Map transformers CLIP keys (either tower or both) to an open_clip ``CLIP`` state dict."""
    out: dict[str, Tensor] = {}
    if "text_projection.weight" in sd:
        for k, v in _TEXT.items():
            out[k] = sd[v]
        out["text_projection"] = sd["text_projection.weight"].t()
        out.update(_blocks_to_openclip(sd, "text_model.encoder.layers.", "transformer.resblocks."))
    if "visual_projection.weight" in sd:
        for k, v in _VISION.items():
            out[k] = sd[v]
        out["visual.proj"] = sd["visual_projection.weight"].t()
        out.update(
            _blocks_to_openclip(sd, "vision_model.encoder.layers.", "visual.transformer.resblocks.")
        )
    scale = sd.get("logit_scale")
    out["logit_scale"] = (
        scale.reshape(()) if scale is not None else torch.tensor(math.log(1 / 0.07))
    )
    return {k: v.contiguous() for k, v in out.items()}
