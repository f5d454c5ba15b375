"""Cost of regional prompts: 0, 2 and 4 regions, timed side by side and counted in FLOPs.

(a) CPU time (of this process, one thread) of the micro-world pipeline (``clipguide.shapes.pipeline()``, 64x64) and of
    the tiny random SDXL pipeline with 0, 2 (left/right halves) and 4 (quadrants) regions
    acting on every step, and 2 regions with placement (with their prompts, and alone), runs
    interleaved round-robin, fastest and median of ``--repeats``;
(b) FLOPs of SDXL base at 1024x1024 on the meta device (no weights; ``guidance_flops``'
    builders): one CFG UNet evaluation (batch 2) with 0, 2 and 4 regions through clipguide's
    own attention hooks, the cross-attention layers' share of the UNet, and the extra work per
    region as a share of the UNet's; whole-call ratios for 30 steps with regions on every step
    and on the first half only.
(c) ``--gpu``: wall time on CUDA of an SDXL-architecture pipeline with random weights (fp16,
    1024x1024, 30 steps, random CLIP-L and bigG text towers so regions are encoded as usual).

    python benchmarks/regions.py               # (a) and (b), a few minutes on a CPU
    python benchmarks/regions.py --tiny        # smoke run: tiny fixtures only
    python benchmarks/regions.py --gpu         # (c), needs a CUDA GPU
Last line: JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from clipguide.conditioning import Region, RegionalPrompt  # noqa: E402
from clipguide.conditioning.region_attention import RegionAttachment  # noqa: E402

PROMPT = "a red circle above a blue square"
LAYOUTS: dict[int, list[Region]] = {
    0: [],
    2: [Region("a red circle", box=(0, 0, 0.5, 1)), Region("a blue square", box=(0.5, 0, 1, 1))],
    4: [
        Region("a red circle", box=(0, 0, 0.5, 0.5)),
        Region("a blue square", box=(0.5, 0, 1, 0.5)),
        Region("a green triangle", box=(0, 0.5, 0.5, 1)),
        Region("a yellow circle", box=(0.5, 0.5, 1, 1)),
    ],
}


SETTINGS: dict[str, Callable[[], RegionalPrompt]] = {
    **{f"{n}_regions": (lambda r=r: RegionalPrompt(r, blend=0.3)) for n, r in LAYOUTS.items()},
    # placement (DEFAULT_POLICY's 0.9 over the first 30 % of the steps): with regions, and
    # alone (region weight 0), as the policy uses them
    "2_regions_placed": lambda: RegionalPrompt(LAYOUTS[2], blend=0.3, place=0.9),
    "2_placed_only": lambda: RegionalPrompt(
        [dataclasses.replace(r, weight=0.0) for r in LAYOUTS[2]], place=0.9
    ),
}


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_side_by_side(
    pipe: Any, call: dict, repeats: int, device: str = "cpu"
) -> dict[str, dict[str, float]]:
    """Seconds per call in each of :data:`SETTINGS` (0, 2 and 4 regions, placement), runs
    interleaved; ratios of the fastest runs
    (noise from other processes only adds time), medians beside them."""
    # on the CPU, this process's CPU time: other processes sharing the cores add wall time only
    clock = time.perf_counter if device.startswith("cuda") else time.process_time
    times: dict[str, list[float]] = {name: [] for name in SETTINGS}
    pipe(**dict(call, num_inference_steps=2))  # warm-up
    for _ in range(repeats):
        for name, make in SETTINGS.items():
            with make().attach(pipe):
                _sync(device)
                t0 = clock()
                pipe(**call, generator=torch.Generator().manual_seed(0))
                _sync(device)
                times[name].append(clock() - t0)
    base, base_median = min(times["0_regions"]), statistics.median(times["0_regions"])
    return {
        name: {
            "seconds": round(min(t), 4),
            "ratio": round(min(t) / base, 3),
            "median_seconds": round(statistics.median(t), 4),
            "median_ratio": round(statistics.median(t) / base_median, 3),
        }
        for name, t in times.items()
    }


def cpu_timings(tiny_only: bool, repeats: int, steps: int) -> dict:
    from clipguide.testing import tiny_sdxl_pipeline

    rows = {}
    pipes: dict[str, tuple[Callable[[], Any], dict]] = {
        "tiny_sdxl_64px": (tiny_sdxl_pipeline, dict(height=64, width=64)),
    }
    if not tiny_only:
        from clipguide.shapes import pipeline as shapes_pipeline

        pipes = {"micro_world_64px": (shapes_pipeline, {}), **pipes}
    for name, (make, size) in pipes.items():
        pipe = make()
        pipe.set_progress_bar_config(disable=True)
        call = dict(size, prompt=PROMPT, num_inference_steps=steps, output_type="pt")
        rows[name] = time_side_by_side(pipe, call, repeats)
        print(name, rows[name], flush=True)
    return rows


def _meta_pipeline(parts: dict) -> Any:
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline
    from guidance_gpu import SDXL_SCHEDULER

    pipe = StableDiffusionXLPipeline(
        vae=parts["vae"],
        text_encoder=None,
        text_encoder_2=None,
        tokenizer=None,
        tokenizer_2=None,
        unet=parts["unet"],
        scheduler=EulerDiscreteScheduler(**SDXL_SCHEDULER),
        add_watermarker=False,
    )
    pipe._guidance_scale = 5.0  # CFG on: the UNet batch is (unconditional, conditional)
    return pipe


def __call__(self: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N807
    """``self.unet(...)`` from a frame that reads as the pipeline's own call: the hook registry
    acts only inside its pipeline's ``__call__`` (a sibling sharing the UNet runs plain)."""
    return self.unet(*args, **kwargs)


def count_flops(tiny: bool, steps: int) -> dict:
    """UNet FLOPs with 0, 2, 4 regions (SDXL base 1024^2, or the tiny fixture), meta device."""
    import guidance_flops
    from torch.utils.flop_counter import FlopCounterMode

    dtype = torch.float16
    parts = guidance_flops.build_tiny(dtype) if tiny else guidance_flops.build_sdxl(dtype)
    pipe = _meta_pipeline(parts)
    pipe.scheduler.set_timesteps(steps)
    meta = torch.device("meta")
    size = parts["latent"]
    latents = torch.zeros(2, 4, size, size, device=meta, dtype=dtype)
    cond = dict(
        encoder_hidden_states=torch.zeros(
            2, parts["tokens"], parts["context"], device=meta, dtype=dtype
        ),
        added_cond_kwargs={
            "text_embeds": torch.zeros(2, parts["pooled"], device=meta, dtype=dtype),
            "time_ids": torch.zeros(2, 6, device=meta, dtype=dtype),
        },
    )
    t = int(pipe.scheduler.timesteps[0])

    def embeds(_text: str) -> torch.Tensor:
        return torch.zeros(1, parts["tokens"], parts["context"], device=meta, dtype=dtype)

    base = guidance_flops.unguided(parts, dtype)
    rows: dict[str, Any] = {}
    for n, regions in LAYOUTS.items():
        attached = RegionAttachment(RegionalPrompt(regions), pipe, encode=embeds)
        try:
            with torch.no_grad(), FlopCounterMode(display=False) as counter:
                __call__(pipe, latents, t, return_dict=False, **cond)
        finally:
            attached.detach()
        attn2 = sum(
            sum(ops.values())
            for name, ops in counter.get_flop_counts().items()
            if name.endswith("attn2")
        )
        rows[f"{n}_regions"] = {"unet_flops": counter.get_total_flops(), "attn2_flops": attn2}
    unet = rows["0_regions"]["unet_flops"]
    plain_total = base["text"] + steps * unet + base["decode"]
    for n in LAYOUTS:
        row = rows[f"{n}_regions"]
        extra = row["unet_flops"] - unet
        row["unet_ratio"] = round(row["unet_flops"] / unet, 4)
        row["extra_per_region_share_of_unet"] = round(extra / max(n, 1) / unet, 4)
        for label, active in (("all_steps", steps), ("first_half", (steps + 1) // 2)):
            row[f"call_ratio_{label}"] = round((plain_total + active * extra) / plain_total, 4)
    result = {
        "models": "tiny fixture" if tiny else "SDXL base, 1024x1024",
        "steps": steps,
        "cross_attention_share_of_unet": round(rows["0_regions"]["attn2_flops"] / unet, 4),
        "plain_call_flops": plain_total,
        "rows": rows,
    }
    print("flops", json.dumps(result), flush=True)
    return result


def gpu_timings(steps: int, repeats: int) -> dict:
    """SDXL architecture, random weights, fp16, 1024^2 on CUDA, with random text towers."""
    import guidance_flops
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from guidance_gpu import SDXL_SCHEDULER, SDXL_UNET, SDXL_VAE
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    from clipguide.model.tokenizer import offline_tokenizer

    configs = guidance_flops.build_sdxl(torch.float16)  # meta modules: their text configs
    torch.manual_seed(0)
    with torch.device("cuda"):
        pipe = StableDiffusionXLPipeline(
            vae=AutoencoderKL(**SDXL_VAE),
            text_encoder=CLIPTextModel(configs["text_1"].config),
            text_encoder_2=CLIPTextModelWithProjection(configs["text_2"].config),
            tokenizer=offline_tokenizer(open_clip_cleaning=False),
            tokenizer_2=offline_tokenizer(open_clip_cleaning=False),
            unet=UNet2DConditionModel(**SDXL_UNET),
            scheduler=EulerDiscreteScheduler(**SDXL_SCHEDULER),
            add_watermarker=False,
        )
    pipe.to(device="cuda", dtype=torch.float16)
    pipe.set_progress_bar_config(disable=True)
    call = dict(
        prompt=PROMPT, height=1024, width=1024, num_inference_steps=steps, output_type="latent"
    )
    rows = time_side_by_side(pipe, call, repeats, device="cuda")
    print("gpu", rows, flush=True)
    return {"device": torch.cuda.get_device_name(), "steps": steps, "rows": rows}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="smoke run on the tiny fixtures")
    parser.add_argument("--gpu", action="store_true", help="time SDXL fp16 1024^2 on CUDA")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    import diffusers

    diffusers.utils.logging.set_verbosity_error()  # casting meta modules to fp16 is intended
    torch.set_num_threads(args.threads)
    result: dict[str, Any] = {"benchmark": "regions"}
    if args.gpu:
        if not torch.cuda.is_available():
            parser.error("--gpu: no CUDA device")
        result["gpu"] = gpu_timings(args.steps or 30, args.repeats or 3)
    else:
        steps = args.steps or (2 if args.tiny else 20)
        result["cpu"] = cpu_timings(args.tiny, args.repeats or (1 if args.tiny else 5), steps)
        result["flops"] = count_flops(args.tiny, 30)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
    sys.exit(0)
