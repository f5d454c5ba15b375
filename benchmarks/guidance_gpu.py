"""Guidance cost on the real architectures with random weights (random weights time like real ones).

SDXL base UNet and VAE configs, the bigG vision tower from open_clip's ``ViT-bigG-14`` config,
fp16, 1024x1024, 30 steps, batch 1: unguided vs ``fast`` (several settings) vs ``full``; wall
time (CUDA-synchronised) and peak GPU memory per configuration, in one process. Text encoders
are skipped (random prompt embeddings; the guidance target is a random embedding) since they
run once per call and do not change the comparison.

``--example`` runs README's SDXL example instead: one prompt, ``num_images_per_prompt=4``, the
pipeline's own 50 steps, images decoded by the pipeline as README's call does; unguided, the
library defaults (``decode_size="auto"``, ``decode_chunk=1``), the defaults decoding the whole
batch in one pass, and the earlier defaults (full-size decode, one pass: expected to run out of
memory on an 80 GB GPU, which is reported as a row).

    python benchmarks/guidance_gpu.py              # needs a CUDA GPU
    python benchmarks/guidance_gpu.py --example    # README's example (4 images, 50 steps)
    python benchmarks/guidance_gpu.py --tiny       # CPU smoke run on the tiny test models
Last line: JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from typing import Any

import torch
from diffusers import (
    AutoencoderKL,
    AutoencoderTiny,
    EulerDiscreteScheduler,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)

from clipguide.guidance import CLIPGuidance
from clipguide.model.clip import CLIP

SDXL_UNET = dict(
    act_fn="silu",
    addition_embed_type="text_time",
    addition_embed_type_num_heads=64,
    addition_time_embed_dim=256,
    attention_head_dim=[5, 10, 20],
    block_out_channels=[320, 640, 1280],
    cross_attention_dim=2048,
    down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    in_channels=4,
    layers_per_block=2,
    norm_num_groups=32,
    out_channels=4,
    projection_class_embeddings_input_dim=2816,
    sample_size=128,
    transformer_layers_per_block=[1, 2, 10],
    up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    use_linear_projection=True,
)
SDXL_VAE = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=["DownEncoderBlock2D"] * 4,
    up_block_types=["UpDecoderBlock2D"] * 4,
    block_out_channels=[128, 256, 512, 512],
    layers_per_block=2,
    latent_channels=4,
    norm_num_groups=32,
    sample_size=1024,
    scaling_factor=0.13025,
    force_upcast=True,  # as the real SDXL VAE: guidance decodes it in fp32
)
SDXL_SCHEDULER = dict(
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    timestep_spacing="leading",
    steps_offset=1,
)


def bigg_vision(device: str, dtype: torch.dtype) -> CLIP:
    """Random-weight bigG vision tower built from open_clip's ViT-bigG-14 config."""
    import open_clip
    from transformers import CLIPVisionModelWithProjection

    from clipguide.model.convert import vision_config_from_openclip
    from clipguide.model.preprocess import Preprocess

    cfg = open_clip.get_model_config("ViT-bigG-14")
    with torch.device(device):
        vision = CLIPVisionModelWithProjection(vision_config_from_openclip(cfg)).to(dtype)
    pre = Preprocess(
        image_size=cfg["vision_cfg"]["image_size"],
        mean=open_clip.OPENAI_DATASET_MEAN,
        std=open_clip.OPENAI_DATASET_STD,
    )
    return CLIP(vision_model=vision.eval(), preprocess=pre, name="random-ViT-bigG-14")


def build(tiny: bool, device: str, dtype: torch.dtype) -> tuple[Any, CLIP, Any, dict]:
    """(pipeline, guide CLIP, tiny decoder, call kwargs)."""
    scheduler = EulerDiscreteScheduler(**SDXL_SCHEDULER)
    if tiny:
        from clipguide.testing import tiny_clip, tiny_sdxl_pipeline

        base = tiny_sdxl_pipeline()
        unet, vae = base.unet, base.vae
        clip = tiny_clip(seed=5)
        decoder = AutoencoderTiny(
            encoder_block_out_channels=(8, 8, 8, 8),
            decoder_block_out_channels=(8, 8, 8, 8),
            num_encoder_blocks=(1, 1, 1, 1),
            num_decoder_blocks=(1, 1, 1, 1),
        )
        width, ctx, pooled = 16, unet.config.cross_attention_dim, 32
    else:
        with torch.device(device):
            unet = UNet2DConditionModel(**SDXL_UNET)
            vae = AutoencoderKL(**SDXL_VAE)
            decoder = AutoencoderTiny()  # taesd-sized decoder
        clip = bigg_vision(device, dtype)
        width, ctx, pooled = 1024, 2048, 1280
    pipe = StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=None,
        text_encoder_2=None,
        tokenizer=None,
        tokenizer_2=None,
        unet=unet,
        scheduler=scheduler,
        add_watermarker=False,
    )
    pipe.to(device=device, dtype=dtype)
    decoder.to(device=device, dtype=dtype)
    clip.vision_model.to(device=device, dtype=dtype)
    gen = torch.Generator().manual_seed(0)
    embeds = {
        "prompt_embeds": torch.randn(1, 77, ctx, generator=gen),
        "negative_prompt_embeds": torch.randn(1, 77, ctx, generator=gen),
        "pooled_prompt_embeds": torch.randn(1, pooled, generator=gen),
        "negative_pooled_prompt_embeds": torch.randn(1, pooled, generator=gen),
    }
    kwargs = {k: v.to(device, dtype) for k, v in embeds.items()}
    kwargs.update(height=width, width=width)
    return pipe, clip, decoder, kwargs


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(
    pipe: Any,
    guidance: CLIPGuidance | None,
    kwargs: dict,
    steps: int,
    device: str,
    images: int = 1,
    output_type: str = "latent",
) -> dict:
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    call = dict(
        kwargs,
        num_inference_steps=steps,
        num_images_per_prompt=images,
        guidance_scale=5.0,
        generator=torch.Generator(device="cpu").manual_seed(0),
        output_type=output_type,
    )
    sync(device)
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if guidance is None:
            pipe(**call)
        else:
            with guidance.attach(pipe):
                pipe(**call)
    sync(device)
    row = {"seconds": round(time.perf_counter() - t0, 3)}
    if device.startswith("cuda"):
        row["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    row["nonfinite_warning"] = any("not finite" in str(w.message) for w in caught)
    if guidance is not None:
        row["guided_steps"] = len(guidance.history)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="CPU smoke run on tiny models")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument(
        "--example", action="store_true", help="README's example: 4 images, 50 steps, decoded"
    )
    args = parser.parse_args(argv)
    device = "cpu" if args.tiny else "cuda"
    if not args.tiny and not torch.cuda.is_available():
        parser.error("no CUDA device; use --tiny for a CPU smoke run")
    dtype = torch.float32 if args.tiny else torch.float16
    steps = args.steps or (4 if args.tiny else 50 if args.example else 30)
    pipe, clip, decoder, kwargs = build(args.tiny, device, dtype)
    pipe.set_progress_bar_config(disable=True)
    target = torch.randn(1, clip.vision_model.config.projection_dim)

    def guide(**kw: Any) -> CLIPGuidance:
        return CLIPGuidance(clip, target=target, **kw)

    if args.example:
        return example(pipe, guide, kwargs, steps, device, dtype)
    configs: dict[str, CLIPGuidance | None] = {
        "unguided": None,
        "fast_first_step": guide(mode="fast", start=0.0, stop=0.05, every=1),
        "fast_default": guide(mode="fast"),
        "fast_all_steps": guide(mode="fast", start=0.0, stop=1.0, every=1),
        "fast_all_steps_ckpt": guide(mode="fast", start=0.0, stop=1.0, every=1, checkpointing=True),
        "fast_all_steps_tiny_decoder": guide(
            mode="fast", start=0.0, stop=1.0, every=1, decoder=decoder
        ),
        "fast_all_steps_decode32": guide(
            mode="fast", start=0.0, stop=1.0, every=1, decode_size=4 if args.tiny else 32
        ),
        "fast_default_tiny_decoder": guide(mode="fast", decoder=decoder),
        "fast_every5_tiny_decoder": guide(mode="fast", every=5, decoder=decoder),
        "fast_default_decode32": guide(mode="fast", decode_size=4 if args.tiny else 32),
        "full_default": guide(mode="full"),
        "full_all_steps": guide(mode="full", start=0.0, stop=1.0, every=1),
        "full_all_steps_ckpt": guide(mode="full", start=0.0, stop=1.0, every=1, checkpointing=True),
    }
    timed(pipe, None, kwargs, 2, device)  # warm-up (kernels, allocator)
    rows = run_all(pipe, configs, kwargs, steps, device)
    print(json.dumps(summary(rows, device, dtype, steps, kwargs)))
    return 0


def run_all(pipe: Any, configs: dict, kwargs: dict, steps: int, device: str, **call: Any) -> dict:
    """One timed run per configuration (the first is unguided), ratios against it."""
    rows: dict[str, dict] = {}
    for name, guidance in configs.items():
        try:
            rows[name] = timed(pipe, guidance, kwargs, steps, device, **call)
        except torch.OutOfMemoryError as err:  # report, keep going
            rows[name] = {"error": f"out of memory: {str(err).splitlines()[0]}"}
            torch.cuda.empty_cache()
        base = rows["unguided"]
        for key in ("seconds", "peak_gib"):
            if key in rows[name] and key in base:
                rows[name][f"{key}_ratio"] = round(rows[name][key] / base[key], 3)
        rows[name]["ratio"] = rows[name].get("seconds_ratio")  # the earlier name
        print(name, rows[name], flush=True)
    return rows


def summary(rows: dict, device: str, dtype: torch.dtype, steps: int, kwargs: dict, **more):
    return {
        "benchmark": "guidance_gpu",
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu (tiny smoke run)",
        "dtype": str(dtype),
        "steps": steps,
        "resolution": kwargs["height"],
        **more,
        "results": rows,
    }


def example(pipe: Any, guide: Any, kwargs: dict, steps: int, device: str, dtype) -> int:
    """README's example: 4 images of one prompt, decoded; guided at the library defaults."""
    images = 4
    configs: dict[str, CLIPGuidance | None] = {
        "unguided": None,
        "library_defaults": guide(),
        "defaults_one_pass": guide(decode_chunk=None),
        "earlier_defaults": guide(decode_size=None, decode_chunk=None),
    }
    call = dict(images=images, output_type="np")
    timed(pipe, None, kwargs, 2, device, **call)  # warm-up (kernels, allocator)
    rows = run_all(pipe, configs, kwargs, steps, device, **call)
    print(json.dumps(summary(rows, device, dtype, steps, kwargs, images=images, example=True)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
