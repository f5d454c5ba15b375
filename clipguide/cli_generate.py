"""``clipguide generate``: text to image with the shipped micro world or any diffusers model.

Writes one PNG per image (atomically) and a JSON sidecar next to it with the prompt, seed,
steps, scheduler, CLIP scores and, for the micro world, the oracle's verdict.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["register", "run", "load_pipeline", "write_atomic", "slug"]

log = logging.getLogger(__name__)

MICRO_WORLD = "shapes"
EXAMPLE = (
    'example: clipguide generate "two red circles above a blue square" --out out/ --num-images 4'
)


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``generate`` subcommand."""
    from clipguide.shapes.shipped import SCHEDULERS

    p = subparsers.add_parser(
        "generate",
        help="generate images from a prompt (default: the shipped micro-world model)",
        description=__doc__,
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("prompt", help="what to draw")
    p.add_argument("--out", default="out", help="output folder (default: out/)")
    p.add_argument(
        "--model",
        default=MICRO_WORLD,
        help="'shapes' (the shipped micro world, default) or a diffusers repo id / folder",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the first image (then +1, ...)")
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default 20 / 30)")
    p.add_argument("--num-images", type=int, default=1, help="images to write (default 1)")
    p.add_argument(
        "--scheduler", choices=SCHEDULERS, default=None, help="sampler (default: the model's)"
    )
    p.add_argument(
        "--cfg",
        type=float,
        default=None,
        dest="cfg_scale",
        help="classifier-free guidance scale (default 2.0 micro world / 7.0)",
    )
    p.add_argument(
        "--size", type=int, default=None, help="image side in pixels (default: the model's)"
    )
    p.add_argument("--device", default=None, help="torch device (default: cuda if available)")
    p.add_argument(
        "--score-with",
        action="append",
        default=None,
        metavar="CLIP",
        help="CLIP(s) to score with, for the sidecar (default: shapes and "
        "shapes-judge for the micro world, none otherwise)",
    )
    p.add_argument(
        "--clip-guidance",
        type=float,
        default=0.0,
        metavar="SCALE",
        help="CLIP-gradient guidance strength (0 = off; try 4 on the micro world, see README)",
    )
    p.add_argument(
        "--clip-guidance-mode", choices=("fast", "full"), default="fast", help="guidance mode"
    )
    p.add_argument(
        "--guide-decoder",
        default=None,
        metavar="DECODER",
        help="decoder guidance differentiates through: 'vae' (the pipeline's), 'tiny' (the "
        "micro world's distilled AutoencoderTiny; its default) or a folder holding an "
        "AutoencoderTiny for this model's latents (e.g. madebyollin/taesdxl for SDXL)",
    )
    p.add_argument(
        "--guide-clip",
        default=None,
        metavar="CLIP",
        help="vision tower that guides and picks best-of-N (default: shapes for the micro "
        "world, bigG ViT-bigG-14/laion2b_s39b_b160k otherwise)",
    )
    p.add_argument(
        "--best-of",
        type=int,
        default=1,
        metavar="N",
        help="generate N candidates per image and keep the one the guide CLIP scores best",
    )
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    # Extension point: guidance (--guidance-scale-clip ...) and --best-of N register here.
    for extend in EXTENSIONS:
        extend(p)
    p.set_defaults(func=run)
    return p


# Callables ``f(parser)`` that add options; their options reach ``run`` through ``args``.
EXTENSIONS: list = []
# Callables ``f(pipe, call_kwargs, args) -> call_kwargs`` applied before sampling.
CALL_HOOKS: list = []


def slug(text: str, limit: int = 48) -> str:
    """A file-name-safe short form of a prompt."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit] or "image"


def write_atomic(path: Path, data: bytes) -> None:
    """Write bytes to ``path`` via a temporary file in the same folder and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_pipeline(model: str, scheduler: str | None, device: str | None, progress: bool):
    """The micro-world pipeline, or any diffusers text-to-image pipeline by repo id / folder."""
    import torch

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if model == MICRO_WORLD:
        from clipguide.shapes import pipeline

        return pipeline(device=device, scheduler=scheduler, progress=progress)
    from diffusers import AutoPipelineForText2Image

    from clipguide.shapes.shipped import make_scheduler

    dtype = torch.float16 if str(device).startswith("cuda") else torch.float32
    pipe = AutoPipelineForText2Image.from_pretrained(model, torch_dtype=dtype)
    if scheduler is not None:
        pipe.scheduler = make_scheduler(scheduler, pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=not progress)
    return pipe.to(device)


def _scores(images, prompt: str, names: list[str], loaded: dict) -> dict[str, list[float]]:
    """Scores per CLIP name; ``loaded`` holds CLIPs already in memory (the guide)."""
    import torch

    from clipguide import load_clip
    from clipguide.scoring import CLIPScorer

    out = {}
    for name in names:
        clip = loaded.get(name) or load_clip(name, dtype=torch.float32)
        scorer = CLIPScorer(clip)
        out[name] = [round(float(s), 4) for s in scorer.score(images, [prompt] * len(images))]
    return out


def _decoder_choice(choice: str | None, micro: bool) -> str:
    """``--guide-decoder`` checked before any model loads; its default filled in."""
    choice = choice or ("tiny" if micro else "vae")
    if choice == "tiny" and not micro:
        raise SystemExit(
            "--guide-decoder 'tiny' is the micro world's decoder; accepted for other models: "
            "'vae' or a folder holding an AutoencoderTiny for their latents"
        )
    if choice not in ("vae", "tiny") and not Path(choice).is_dir():
        raise SystemExit(
            f"--guide-decoder {choice!r} is not a folder; accepted: 'vae', 'tiny' (micro world) "
            "or a folder holding an AutoencoderTiny"
        )
    return choice


def guide_decoder(choice: str, pipe):
    """The decoder guidance uses: None (the pipeline's VAE) or an ``AutoencoderTiny``."""
    if choice == "vae":
        return None
    if choice == "tiny":
        from clipguide.shapes import load_tiny_decoder

        return load_tiny_decoder(device=pipe.device)
    from diffusers import AutoencoderTiny

    decoder = AutoencoderTiny.from_pretrained(choice, torch_dtype=pipe.unet.dtype)
    return decoder.to(pipe.device).eval().requires_grad_(False)


def _sample(pipe, call: dict, seeds: list[int], args, micro: bool):
    """Sample, with CLIP guidance attached and best-of-N selection when asked.

    Returns the images, the seed that regenerates each, per-image best-of-N records, and
    the guide CLIP by name (``{}`` when none was loaded) for scoring without a reload.
    """
    import contextlib

    from clipguide import CLIPGuidance, CLIPScorer, best_of_n, load_clip

    guide, loaded = None, {}
    vision = args.guide_clip or (MICRO_WORLD if micro else None)
    if args.clip_guidance or args.best_of > 1:
        guide = load_clip(pipe, vision=vision)
        if vision is not None:
            loaded[vision] = guide
    attached = contextlib.nullcontext()
    if args.clip_guidance:
        guidance = CLIPGuidance(
            guide,
            scale=args.clip_guidance,
            mode=args.clip_guidance_mode,
            decoder=guide_decoder(args.guide_decoder, pipe),
        )
        attached = guidance.attach(pipe)
    with attached:
        if args.best_of == 1:
            return pipe(**call).images, seeds, [], loaded
        n = args.best_of
        scorer = CLIPScorer(guide)
        kwargs = {k: v for k, v in call.items() if k not in ("prompt", "generator")}
        kwargs.pop("num_images_per_prompt")
        images, chosen, picks = [], [], []
        for i in range(len(seeds)):
            result = best_of_n(
                pipe,
                call["prompt"],
                n,
                scorer,
                seed=args.seed + i * n,
                batch_size=n,
                progress=False,
                **kwargs,
            )
            images.append(result.images[0])
            chosen.append(result.seeds[0])
            picks.append(
                {
                    "n": n,
                    "judge": vision or "ViT-bigG-14/laion2b_s39b_b160k",
                    "candidate_seeds": result.seeds,
                    "candidate_scores": [round(float(x), 4) for x in result.scores],
                }
            )
        return images, chosen, picks, loaded


def run(args: argparse.Namespace) -> int:
    """Generate ``--num-images`` images and their sidecars; returns the exit code."""
    import io

    import torch

    from clipguide.shapes.shipped import DEFAULT_GUIDANCE_SCALE, DEFAULT_STEPS

    if args.best_of < 1:
        raise SystemExit(f"--best-of must be >= 1, got {args.best_of}")
    if args.clip_guidance < 0:
        raise SystemExit(f"--clip-guidance must be >= 0, got {args.clip_guidance}")
    if args.num_images < 1:
        raise SystemExit(f"--num-images must be >= 1, got {args.num_images}")
    if args.steps is not None and args.steps < 1:
        raise SystemExit(f"--steps must be >= 1, got {args.steps}")
    micro = args.model == MICRO_WORLD
    args.guide_decoder = _decoder_choice(args.guide_decoder, micro)
    steps = args.steps or (DEFAULT_STEPS if micro else 30)
    cfg = (
        args.cfg_scale if args.cfg_scale is not None else (DEFAULT_GUIDANCE_SCALE if micro else 7.0)
    )
    pipe = load_pipeline(args.model, args.scheduler, args.device, not args.no_progress)
    seeds = [args.seed + i for i in range(args.num_images)]
    call = dict(
        prompt=args.prompt,
        num_inference_steps=steps,
        guidance_scale=cfg,
        num_images_per_prompt=len(seeds),
        generator=[torch.Generator("cpu").manual_seed(s) for s in seeds],
    )
    if args.size is not None:
        call.update(height=args.size, width=args.size)
    for hook in CALL_HOOKS:
        call = hook(pipe, call, args)
    images, seeds, picks, loaded = _sample(pipe, call, seeds, args, micro)
    names = (
        args.score_with
        if args.score_with is not None
        else (["shapes", "shapes-judge"] if micro else [])
    )
    scores = _scores(images, args.prompt, names, loaded) if names else {}
    verdicts = None
    if micro:
        from clipguide.shapes import check

        try:
            verdicts = [check(im, args.prompt) for im in images]
        except ValueError as err:  # prompt outside the micro-world grammar
            log.warning("no oracle verdict: %s", err)
    out = Path(args.out)
    stem = slug(args.prompt)
    for i, (seed, image) in enumerate(zip(seeds, images, strict=True)):
        path = out / f"{stem}-{seed}.png"
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        write_atomic(path, buf.getvalue())
        record = {
            "file": path.name,
            "prompt": args.prompt,
            "model": args.model,
            "seed": seed,
            "steps": steps,
            "scheduler": type(pipe.scheduler).__name__,
            "cfg_scale": cfg,
            "size": list(image.size),
            "scores": {k: v[i] for k, v in scores.items()},
        }
        if args.clip_guidance:
            record["clip_guidance"] = {
                "scale": args.clip_guidance,
                "mode": args.clip_guidance_mode,
                "decoder": args.guide_decoder,
            }
        if picks:
            record["best_of"] = picks[i]
        if verdicts is not None:
            v = verdicts[i]
            record["oracle"] = {
                "ok": v.ok,
                "requirements": [{"what": w, "ok": ok} for w, ok in v.requirements],
                "objects": [
                    {
                        "shape": o.shape,
                        "colour": o.colour,
                        "size": o.size,
                        "centre": [round(o.cx, 1), round(o.cy, 1)],
                    }
                    for o in v.objects
                ],
            }
        write_atomic(path.with_suffix(".json"), (json.dumps(record, indent=2) + "\n").encode())
        print(path)
    return 0
