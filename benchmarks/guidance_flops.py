"""Guidance cost on SDXL + bigG in FLOPs and activation memory, counted without a GPU or weights.

Every module is built from its real config on the meta device (no memory, no weights) and run
under ``torch.utils.flop_counter.FlopCounterMode``: the SDXL base UNet and VAE, a
TAESDXL-sized ``AutoencoderTiny``, CLIP-L and bigG text towers, and the bigG vision tower
(open_clip ``ViT-bigG-14``). 1024x1024, 30 Euler steps, classifier-free guidance on (UNet batch
2), batch 1.

- unguided = text encoders once + 30 UNet forwards (batch 2) + one VAE decode;
- a guided step runs clipguide's own ``CLIPGuidance.gradient`` on meta tensors (decoder forward
  and backward, views, bigG vision forward and backward; ``full`` also the UNet forward and
  backward on the conditional half), and the settings' window/``every`` say how many of the 30
  evaluations are guided;
- activation memory: bytes of the tensors autograd saves for the backward of one guided step
  (saved-tensor hooks; fp16 modules, the SDXL VAE upcast to fp32 as guidance decodes it), next
  to the weights the step needs on the GPU.

    python benchmarks/guidance_flops.py            # SDXL + bigG (about a minute on a CPU)
    python benchmarks/guidance_flops.py --tiny     # smoke run on the tiny test models
Last line: JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from clipguide.guidance import CLIPGuidance, GuidanceSettings
from clipguide.guidance.schedulers import NoiseLevel
from clipguide.model.clip import CLIP

META = torch.device("meta")
STEPS = 30
# name -> (CLIPGuidance settings, decoder: "vae" | "tiny")
SETTINGS: dict[str, tuple[dict, str]] = {
    "fast, VAE (library defaults)": ({}, "vae"),
    "fast, VAE, decode_size 32": ({"decode_size": 32}, "vae"),
    "fast, tiny decoder": ({}, "tiny"),
    "fast, tiny, every 5": ({"every": 5}, "tiny"),
    "fast, tiny, every 10": ({"every": 10}, "tiny"),
    "fast, tiny, 4 views": ({"views": 4}, "tiny"),
    "fast, tiny, every step of the window": ({"every": 1}, "tiny"),
    "full, VAE": ({"mode": "full"}, "vae"),
}


def measure(fn: Callable[[], Any]) -> tuple[int, int]:
    """(FLOPs, bytes saved for backward) of ``fn()`` run on meta tensors."""
    saved = [0]

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved[0] += t.numel() * t.element_size()
        return t

    with FlopCounterMode(display=False) as counter:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            fn()
    return counter.get_total_flops(), saved[0]


def weight_bytes(module: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())


def build_sdxl(dtype: torch.dtype) -> dict[str, Any]:
    """Meta-device SDXL base + bigG modules from their configs (see guidance_gpu.py)."""
    import open_clip
    from diffusers import AutoencoderKL, AutoencoderTiny, UNet2DConditionModel
    from guidance_gpu import SDXL_UNET, SDXL_VAE, bigg_vision
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from clipguide.model.convert import text_config_from_openclip

    clip_l = CLIPTextConfig(
        hidden_size=768,
        intermediate_size=3072,
        num_hidden_layers=12,
        num_attention_heads=12,
        projection_dim=768,
        hidden_act="quick_gelu",
    )
    with META:
        parts = {
            "unet": UNet2DConditionModel(**SDXL_UNET).to(dtype),
            "vae": AutoencoderKL(**SDXL_VAE).to(dtype),
            "tiny": AutoencoderTiny().to(dtype),  # TAESDXL's architecture
            "text_1": CLIPTextModel(clip_l).to(dtype),
            "text_2": CLIPTextModelWithProjection(
                text_config_from_openclip(open_clip.get_model_config("ViT-bigG-14"))
            ).to(dtype),
        }
    parts["clip"] = bigg_vision("meta", dtype)
    parts.update(latent=128, context=2048, pooled=1280, tokens=77)
    return parts


def build_tiny(dtype: torch.dtype) -> dict[str, Any]:
    """The tiny test fixtures on the meta device (smoke run)."""
    from diffusers import AutoencoderTiny

    from clipguide.testing import tiny_clip, tiny_sdxl_pipeline

    pipe = tiny_sdxl_pipeline()
    tiny = AutoencoderTiny(
        encoder_block_out_channels=(8, 8, 8, 8),
        decoder_block_out_channels=(8, 8, 8, 8),
        num_encoder_blocks=(1, 1, 1, 1),
        num_decoder_blocks=(1, 1, 1, 1),
    )
    clip = tiny_clip(seed=5, towers=("vision",))
    clip.to(META, dtype)
    parts = {
        "unet": pipe.unet.to(META, dtype),
        "vae": pipe.vae.to(META, dtype),
        "tiny": tiny.to(META, dtype),
        "text_1": pipe.text_encoder.to(META, dtype),
        "text_2": pipe.text_encoder_2.to(META, dtype),
        "clip": clip,
    }
    cfg = pipe.unet.config
    parts.update(
        latent=cfg.sample_size,
        context=cfg.cross_attention_dim,
        pooled=pipe.text_encoder_2.config.projection_dim,
        tokens=77,
    )
    return parts


def unet_call(parts: dict, batch: int, dtype: torch.dtype) -> Callable[[torch.Tensor], Any]:
    """latents (batch, 4, h, w) -> UNet output, with SDXL's added conditioning."""
    cond = {
        "encoder_hidden_states": torch.zeros(
            batch, parts["tokens"], parts["context"], device=META, dtype=dtype
        ),
        "added_cond_kwargs": {
            "text_embeds": torch.zeros(batch, parts["pooled"], device=META, dtype=dtype),
            "time_ids": torch.zeros(batch, 6, device=META, dtype=dtype),
        },
    }
    t = torch.tensor(500.0, device=META)

    def call(x: torch.Tensor) -> torch.Tensor:
        return parts["unet"](x.to(dtype), t, return_dict=False, **cond)[0]

    return call


def unguided(parts: dict, dtype: torch.dtype) -> dict[str, int]:
    """FLOPs of one unguided text-to-image call, by part."""
    ids = torch.zeros(2, parts["tokens"], dtype=torch.long, device=META)
    latents = torch.zeros(2, 4, parts["latent"], parts["latent"], device=META, dtype=dtype)
    step = unet_call(parts, 2, dtype)
    with torch.no_grad():
        text = sum(measure(lambda m=m: parts[m](input_ids=ids))[0] for m in ("text_1", "text_2"))
        unet = measure(lambda: step(latents))[0]
        vae = parts["vae"]
        decode = measure(lambda: vae.to(torch.float32).decode(latents[:1].float()))[0]
        vae.to(dtype)
    return {"text": text, "unet_per_step": unet, "decode": decode}


def guided_step(parts: dict, settings: dict, decoder: str, dtype: torch.dtype) -> dict:
    """FLOPs and saved-activation bytes of one guided step, through clipguide's own code."""
    clip: CLIP = parts["clip"]
    guidance = CLIPGuidance(clip, target=torch.zeros(1, clip.embed_dim, device=META), **settings)
    size = parts["latent"]
    latents = torch.zeros(1, 4, size, size, device=META)
    level = NoiseLevel(1.0, 5.0, 1.0 / (26**0.5), "epsilon", "sigma")
    model_fn = None
    if guidance.settings.mode == "full":
        call = unet_call(parts, 1, dtype)
        model_fn = lambda x: call(x * level.input_scale)  # noqa: E731
    targets = guidance.targets(1)
    module = parts[decoder]
    flops, saved = measure(
        lambda: guidance.gradient(
            latents, latents, level, targets, decoder=module, model_fn=model_fn
        )
    )
    weights = weight_bytes(clip.vision_model) + weight_bytes(module)
    if model_fn is not None:
        weights += weight_bytes(parts["unet"])
    return {"flops": flops, "saved_bytes": saved, "weight_bytes": weights}


def guided_evaluations(settings: dict, steps: int) -> int:
    s = GuidanceSettings(**settings)
    return sum(s.active(p, steps) for p in range(steps))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="smoke run on the tiny test models")
    parser.add_argument("--steps", type=int, default=STEPS)
    args = parser.parse_args(argv)
    import diffusers

    diffusers.utils.logging.set_verbosity_error()  # casting meta modules to fp16 is intended
    dtype = torch.float16
    parts = build_tiny(dtype) if args.tiny else build_sdxl(dtype)
    base = unguided(parts, dtype)
    base_total = base["text"] + args.steps * base["unet_per_step"] + base["decode"]
    rows = {}
    tera = 1e12
    print(
        f"unguided: {base_total / tera:.1f} TFLOP (UNet {base['unet_per_step'] / tera:.2f} per "
        f"step x {args.steps}, decode {base['decode'] / tera:.2f}, text {base['text'] / tera:.2f})"
    )
    header = f"{'setting':<40}{'guided':>8}{'TFLOP/step':>12}{'ratio':>8}{'saved GiB':>11}"
    print(header + f"{'weights GiB':>13}")
    for name, (settings, decoder) in SETTINGS.items():
        step = guided_step(parts, settings, decoder, dtype)
        n = guided_evaluations(settings, args.steps)
        ratio = (base_total + n * step["flops"]) / base_total
        rows[name] = {
            "settings": settings,
            "decoder": decoder,
            "guided_evaluations": n,
            "flops_per_guided_step": step["flops"],
            "ratio": round(ratio, 4),
            "saved_activation_gib": round(step["saved_bytes"] / 2**30, 3),
            "weight_gib": round(step["weight_bytes"] / 2**30, 3),
        }
        print(
            f"{name:<40}{n:>8}{step['flops'] / tera:>12.3f}{ratio:>8.3f}"
            f"{step['saved_bytes'] / 2**30:>11.2f}{step['weight_bytes'] / 2**30:>13.2f}"
        )
    summary = {
        "benchmark": "guidance_flops",
        "models": "tiny fixtures" if args.tiny else "SDXL base + bigG, 1024x1024",
        "steps": args.steps,
        "unguided_flops": base_total,
        "unguided_parts": base,
        "settings": rows,
    }
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
    sys.exit(0)
