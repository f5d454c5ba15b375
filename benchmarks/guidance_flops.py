"""Guidance cost on SDXL + bigG in FLOPs and activation memory, counted without a GPU or weights.

Every module is built from its real config on the meta device (no memory, no weights) and run
under ``torch.utils.flop_counter.FlopCounterMode``: the SDXL base UNet and VAE, a
TAESDXL-sized ``AutoencoderTiny``, CLIP-L and bigG text towers, and the bigG vision tower
(open_clip ``ViT-bigG-14``). 1024x1024, 30 Euler steps, classifier-free guidance on (UNet batch
2 per image).

- unguided = text encoders once + 30 UNet forwards (batch 2 per image) + one VAE decode per
  image;
- a guided step runs clipguide's own ``CLIPGuidance.gradient`` on meta tensors (decoder forward
  and backward, views, bigG vision forward and backward; ``full`` also the UNet forward and
  backward on the conditional half), and the settings' window/``every`` say how many of the 30
  evaluations are guided;
- activation memory (``clipguide.testing.SavedActivations``): the peak of the bytes autograd
  holds for backward passes during one guided step (fp16 modules, the SDXL VAE upcast to fp32
  as guidance decodes it), the weights that layers save excluded; "all saved" sums every saved
  tensor, weights included, freed or not (the figure earlier versions printed); next to the
  weights the step needs on the GPU.

The first table is one image per setting; the second is README's SDXL example (one prompt,
``num_images_per_prompt=4``) at batch 1 and 4, the earlier defaults (full-size decode, the whole
batch in one pass) beside today's (``decode_size="auto"``, ``decode_chunk=1``).

    python benchmarks/guidance_flops.py            # SDXL + bigG (a few minutes on a CPU)
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
from clipguide.testing import SavedActivations

META = torch.device("meta")
STEPS = 30
# name -> (CLIPGuidance settings, decoder: "vae" | "tiny")
EARLIER_DEFAULTS = {"decode_size": None, "decode_chunk": None}
SETTINGS: dict[str, tuple[dict, str]] = {
    "fast, VAE (library defaults)": ({}, "vae"),
    "fast, VAE, full size, one pass (earlier)": (EARLIER_DEFAULTS, "vae"),
    "fast, VAE, decode_size 32": ({"decode_size": 32}, "vae"),
    "fast, tiny decoder": ({}, "tiny"),
    "fast, tiny, every 5": ({"every": 5}, "tiny"),
    "fast, tiny, every 10": ({"every": 10}, "tiny"),
    "fast, tiny, 4 views": ({"views": 4}, "tiny"),
    "fast, tiny, every step of the window": ({"every": 1}, "tiny"),
    "full, VAE": ({"mode": "full"}, "vae"),
}
# README's SDXL example at these batches: (settings, decoder)
DEFAULTS: dict[str, dict] = {"earlier defaults": EARLIER_DEFAULTS, "library defaults": {}}
BATCHES = (1, 4)
GOAL_GIB = 8.0  # issue 20 item 7: saved activations per guided step, README's example


def measure(fn: Callable[[], Any]) -> tuple[int, SavedActivations]:
    """(FLOPs, saved-tensor meter) of ``fn()`` run on meta tensors."""
    with FlopCounterMode(display=False) as counter, SavedActivations() as saved:
        fn()
    return counter.get_total_flops(), saved


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


def unguided(parts: dict, dtype: torch.dtype, batch: int = 1) -> dict[str, int]:
    """FLOPs of one unguided text-to-image call of ``batch`` images of one prompt, by part."""
    ids = torch.zeros(2, parts["tokens"], dtype=torch.long, device=META)
    size = parts["latent"]
    latents = torch.zeros(2 * batch, 4, size, size, device=META, dtype=dtype)
    step = unet_call(parts, 2 * batch, dtype)
    with torch.no_grad():
        text = sum(measure(lambda m=m: parts[m](input_ids=ids))[0] for m in ("text_1", "text_2"))
        unet = measure(lambda: step(latents))[0]
        vae = parts["vae"]
        decode = measure(lambda: vae.to(torch.float32).decode(latents[:batch].float()))[0]
        vae.to(dtype)
    return {"text": text, "unet_per_step": unet, "decode": decode}


def total(base: dict[str, int], steps: int) -> int:
    return base["text"] + steps * base["unet_per_step"] + base["decode"]


def guided_step(
    parts: dict, settings: dict, decoder: str, dtype: torch.dtype, batch: int = 1
) -> dict:
    """FLOPs and saved-activation bytes of one guided step of ``batch`` images, through
    clipguide's own code."""
    clip: CLIP = parts["clip"]
    guidance = CLIPGuidance(clip, target=torch.zeros(1, clip.embed_dim, device=META), **settings)
    size = parts["latent"]
    latents = torch.zeros(batch, 4, size, size, device=META)
    level = NoiseLevel(1.0, 5.0, 1.0 / (26**0.5), "epsilon", "sigma")
    model_fn = None
    if guidance.settings.mode == "full":
        call = unet_call(parts, batch, dtype)
        model_fn = lambda x: call(x * level.input_scale)  # noqa: E731
    targets = guidance.targets(batch)
    module = parts[decoder]
    flops, saved = measure(
        lambda: guidance.gradient(
            latents, latents, level, targets, decoder=module, model_fn=model_fn
        )
    )
    weights = weight_bytes(clip.vision_model) + weight_bytes(module)
    if model_fn is not None:
        weights += weight_bytes(parts["unet"])
    return {
        "flops": flops,
        "peak_saved_bytes": saved.peak,
        "all_saved_bytes": saved.total,
        "weight_bytes": weights,
        "decode_size": guidance.decode_size(module),
    }


def guided_evaluations(settings: dict, steps: int) -> int:
    s = GuidanceSettings(**settings)
    return sum(s.active(p, steps) for p in range(steps))


def readme_example(parts: dict, dtype: torch.dtype, steps: int) -> dict:
    """README's example (one prompt, several images) with the earlier and today's defaults, at
    each of ``BATCHES``: saved activations per guided step and FLOPs against unguided."""
    tera, gib = 1e12, 2**30
    print(f"\nREADME's example (VAE, one prompt; goal: <= {GOAL_GIB:g} GiB per guided step)")
    print(f"{'defaults':<20}{'images':>7}{'peak GiB':>10}{'x 1 image':>10}{'ratio':>8}{'TFLOP':>9}")
    out: dict[str, dict] = {}
    single: dict[str, int] = {}  # peak saved bytes of one image, per defaults
    for batch in BATCHES:
        base_total = total(unguided(parts, dtype, batch), steps)
        for name, settings in DEFAULTS.items():
            step = guided_step(parts, settings, "vae", dtype, batch)
            n = guided_evaluations(settings, steps)
            ratio = (base_total + n * step["flops"]) / base_total
            peak = step["peak_saved_bytes"] / gib
            growth = step["peak_saved_bytes"] / single.setdefault(name, step["peak_saved_bytes"])
            out[f"{name}, batch {batch}"] = {
                "defaults": name,
                "batch": batch,
                "decode_size": step["decode_size"],
                "peak_saved_activation_gib": round(peak, 3),
                "all_saved_gib": round(step["all_saved_bytes"] / gib, 3),
                "peak_vs_one_image": round(growth, 3),
                "ratio": round(ratio, 4),
                "unguided_flops": base_total,
                "within_goal": peak <= GOAL_GIB,
            }
            print(
                f"{name:<20}{batch:>7}{peak:>10.2f}{growth:>10.2f}{ratio:>8.3f}"
                f"{(base_total + n * step['flops']) / tera:>9.1f}"
            )
    return out


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
    base_total = total(base, args.steps)
    rows = {}
    tera, gib = 1e12, 2**30
    print(
        f"unguided: {base_total / tera:.1f} TFLOP (UNet {base['unet_per_step'] / tera:.2f} per "
        f"step x {args.steps}, decode {base['decode'] / tera:.2f}, text {base['text'] / tera:.2f})"
    )
    header = f"{'setting':<42}{'guided':>7}{'TFLOP/step':>11}{'ratio':>7}{'peak GiB':>10}"
    print(header + f"{'all saved GiB':>15}{'weights GiB':>13}")
    for name, (settings, decoder) in SETTINGS.items():
        step = guided_step(parts, settings, decoder, dtype)
        n = guided_evaluations(settings, args.steps)
        ratio = (base_total + n * step["flops"]) / base_total
        rows[name] = {
            "settings": settings,
            "decoder": decoder,
            "decode_size": step["decode_size"],
            "guided_evaluations": n,
            "flops_per_guided_step": step["flops"],
            "ratio": round(ratio, 4),
            "peak_saved_activation_gib": round(step["peak_saved_bytes"] / gib, 3),
            "all_saved_gib": round(step["all_saved_bytes"] / gib, 3),
            "weight_gib": round(step["weight_bytes"] / gib, 3),
        }
        print(
            f"{name:<42}{n:>7}{step['flops'] / tera:>11.3f}{ratio:>7.3f}"
            f"{step['peak_saved_bytes'] / gib:>10.2f}{step['all_saved_bytes'] / gib:>15.2f}"
            f"{step['weight_bytes'] / gib:>13.2f}"
        )
    example = readme_example(parts, dtype, args.steps)
    summary = {
        "benchmark": "guidance_flops",
        "models": "tiny fixtures" if args.tiny else "SDXL base + bigG, 1024x1024",
        "steps": args.steps,
        "unguided_flops": base_total,
        "unguided_parts": base,
        "settings": rows,
        "readme_example": example,
    }
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
    sys.exit(0)
