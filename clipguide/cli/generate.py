"""Generate images from a prompt with the shipped micro world or any diffusers model.

The prompt (and --negative-prompt) is conditioned through clipguide's encode_prompt for every
model: A1111 weights "(red fox:1.3)", BREAK and prompts past 77 tokens work, and every CLIP
that scores, guides or picks compares images with the prompt's plain text.

Writes one PNG per image, named <prompt slug>-<hash>-<seed>.png (the hash covers the whole
prompt and the settings that change the image), with the settings in an A1111-style
"parameters" text chunk, and a JSON sidecar next to it with the prompt, seed, steps,
scheduler, CLIP scores and, for the micro world, the oracle's verdict. Each file is replaced
whole; the sidecar is written before its PNG, so a PNG never lacks its sidecar, and a rerun
with the same arguments rewrites every pair (a kill leaves at most a sidecar whose PNG is
missing). All options, the output folder and the model name are checked before any model
loads; the CLIPs that guide or score load (and are checked against the pipeline) before
sampling.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from pathlib import Path
from typing import Any

from clipguide.cli.args import (
    DEFAULT_PIPELINE,
    MAX_SCALE,
    MAX_SIZE,
    CLIError,
    device_arg,
    positive_int,
    scale_arg,
    seed_arg,
    size_arg,
)
from clipguide.cli.files import write_atomic
from clipguide.cli.generate_checks import check_args, plain
from clipguide.cli.pipelines import (
    DTYPES,
    PipelineOptions,
    load_pipeline,
    lora_arg,
)
from clipguide.cli.pngmeta import file_stem, parameters_text, png_bytes, slug
from clipguide.cli.regions import add_region_options, layout_record
from clipguide.cli.sampling import finite_guard, load_guide, sample
from clipguide.cli.schedulers import KARRAS, SCHEDULERS
from clipguide.cli.summary import say, summary_line, write_sheet
from clipguide.scoring.method_names import METHODS

__all__ = ["register", "run", "load_pipeline", "slug"]

log = logging.getLogger(__name__)

EXAMPLE = (
    'example: clipguide generate "two red circles above a blue square" --out out/ --num-images 4'
)


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``generate`` subcommand."""
    p = subparsers.add_parser(
        "generate",
        help="generate images from a prompt (default: the shipped micro-world model)",
        description=__doc__,
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("prompt", help="what to draw (A1111 weights and BREAK work)")
    p.add_argument(
        "--negative-prompt", default=None, metavar="TEXT", help="what not to draw (default: none)"
    )
    p.add_argument("--out", default="out", help="output folder (default: out/); made if missing")
    p.add_argument(
        "--model",
        default=DEFAULT_PIPELINE,
        help="'shapes' (the shipped micro world, default), a diffusers repo id / folder, or a "
        "single-file checkpoint (.safetensors, .ckpt)",
    )
    _model_options(p)
    p.add_argument(
        "--seed",
        type=seed_arg,
        default=0,
        help="seed of the first image; image i uses seed + i, or with --best-of N its "
        "candidates use seed + i*N ... seed + i*N + N-1 and its files are named after the "
        "chosen candidate's seed",
    )
    p.add_argument(
        "--steps", type=positive_int, default=None, help="sampling steps (default 20 / 30)"
    )
    p.add_argument("--num-images", type=positive_int, default=1, help="images to write (default 1)")
    p.add_argument(
        "--scheduler",
        choices=SCHEDULERS,
        default=None,
        metavar="NAME",
        help=f"sampler (default: the model's): {', '.join(SCHEDULERS)}",
    )
    p.add_argument(
        "--karras",
        action="store_true",
        help=f"Karras sigmas (for {', '.join(KARRAS)}); same as a NAME-karras scheduler",
    )
    p.add_argument(
        "--cfg",
        type=scale_arg,
        default=None,
        dest="cfg_scale",
        help=f"classifier-free guidance scale, 0..{MAX_SCALE:g}; 1 or less turns it off "
        "(default 2.0 micro world / 7.0)",
    )
    p.add_argument(
        "--width",
        type=size_arg,
        default=None,
        help=f"image width in pixels, a multiple of 8 up to {MAX_SIZE} (default: the model's)",
    )
    p.add_argument(
        "--height",
        type=size_arg,
        default=None,
        help=f"image height in pixels, a multiple of 8 up to {MAX_SIZE} (default: the model's)",
    )
    p.add_argument(
        "--size", type=size_arg, default=None, help="square images: --width and --height both"
    )
    p.add_argument(
        "--device", type=device_arg, default=None, help="torch device (default: cuda if any)"
    )
    _guide_options(p)
    add_region_options(p)
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=run)
    return p


def _guide_options(p: argparse.ArgumentParser) -> None:
    """The CLIPs that score, guide and pick: --score-with, --clip-guidance..., --best-of."""
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
        type=scale_arg,
        default=0.0,
        metavar="SCALE",
        help=f"CLIP-gradient guidance strength, 0..{MAX_SCALE:g} (0 = off; try 4 on the micro "
        "world, see README)",
    )
    p.add_argument(
        "--clip-guidance-mode",
        choices=("fast", "full"),
        default=None,
        help="guidance mode (default: fast)",
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
        "world, bigG ViT-bigG-14/laion2b_s39b_b160k otherwise); for a model without SDXL's "
        "bigG text tower (SD 1.x/2.x), a standalone CLIP whose own towers are used",
    )
    p.add_argument(
        "--best-of",
        type=positive_int,
        default=None,
        metavar="N",
        help="generate N candidates per image and keep the one the guide CLIP ranks first, "
        "with a contact sheet of them (default: the model's, 4 for the micro world, else 1; "
        "1 = one plain sample)",
    )
    p.add_argument(
        "--method",
        choices=METHODS,
        default=None,
        help="how --best-of ranks its candidates (default: structured, which sees "
        "attributes, counts and relations; clipscore: plain CLIPScore)",
    )


def _model_options(p: argparse.ArgumentParser) -> None:
    """How a diffusers ``--model`` loads: --dtype, --variant, --lora, --config."""
    p.add_argument(
        "--dtype",
        choices=DTYPES,
        default="auto",
        help="weights' precision (default auto: fp16 on CUDA, fp32 on the CPU)",
    )
    p.add_argument(
        "--variant", default=None, help="weight files variant to load, e.g. fp16 (default: none)"
    )
    p.add_argument(
        "--lora",
        type=lora_arg,
        action="append",
        default=None,
        metavar="PATH[:SCALE]",
        help="a LoRA (file, folder or repo id) at strength SCALE (default 1); repeatable",
    )
    p.add_argument(
        "--config",
        default=None,
        metavar="FOLDER",
        help="for a single-file --model: a diffusers folder of the same architecture whose "
        "component configs it loads with (needed offline)",
    )


def _load_scorers(names: list[str], loaded: dict) -> dict[str, Any]:
    """A ``CLIPScorer`` per ``--score-with`` name, loaded before sampling (``loaded``: reuse)."""
    import torch

    from clipguide.model import load_clip
    from clipguide.scoring import CLIPScorer

    scorers = {}
    for name in dict.fromkeys(names):
        try:
            clip = loaded.get(name) or load_clip(name, dtype=torch.float32)
        except Exception as err:  # noqa: BLE001 - any loading failure names the option
            raise CLIError(f"--score-with {name!r}: {err}", code=1) from err
        scorers[name] = CLIPScorer(clip, progress=False)
    return scorers


def _scores(images, prompt: str, scorers: dict) -> dict[str, list[float | None]]:
    """Scores per CLIP name; a non-finite score is recorded as null (with a warning)."""
    out = {}
    for name, scorer in scorers.items():
        values = [float(s) for s in scorer.score(images, [prompt] * len(images))]
        if not all(math.isfinite(v) for v in values):
            log.warning("--score-with %s gave non-finite scores; recorded as null", name)
        out[name] = [round(v, 4) if math.isfinite(v) else None for v in values]
    return out


def _load(args: argparse.Namespace):
    """The pipeline for ``--model``; any failure becomes one line naming the option."""
    options = PipelineOptions(
        scheduler=args.scheduler, karras=args.karras, dtype=args.dtype, variant=args.variant,
        config=args.config, loras=tuple(args.lora or ()), progress=not args.no_progress,
    )  # fmt: skip
    try:
        return load_pipeline(args.model, device=args.device, options=options)
    except ValueError as err:  # the scheduler has no Karras sigmas
        if args.karras and "Karras" in str(err):
            raise CLIError(f"--karras: {err}") from err
        raise CLIError(f"--model {args.model!r}: cannot load the pipeline: {err}", 1) from err
    except Exception as err:  # noqa: BLE001 - diffusers/hub raise many types
        what = "LoRA" if args.lora and "lora" in str(err).lower() else "pipeline"
        raise CLIError(f"--model {args.model!r}: cannot load the {what}: {err}", 1) from err


def _conditioning(args: argparse.Namespace, pipe) -> dict:
    """The prompt and negative prompt through ``encode_prompt`` (weights, BREAK, long
    prompts); the raw text for a pipeline it cannot encode for (with a warning)."""
    from clipguide.conditioning import encode_prompt

    try:
        return dict(encode_prompt(pipe, args.prompt, args.negative_prompt))
    except TypeError as err:  # not an SD/SDXL/SD3-style pipeline
        log.warning("%s; the prompt goes to the pipeline as it is (no weights, BREAK)", err)
        return {"prompt": args.prompt, "negative_prompt": args.negative_prompt}


def _call(args: argparse.Namespace, pipe, seeds: list[int], steps: int, cfg: float) -> dict:
    """The pipeline's keyword arguments: the prompt's embeddings, one generator per image,
    the finite-latents guard."""
    import inspect

    import torch

    call = dict(
        **_conditioning(args, pipe),
        num_inference_steps=steps,
        guidance_scale=cfg,
        num_images_per_prompt=len(seeds),
        generator=[torch.Generator("cpu").manual_seed(s) for s in seeds],
    )
    if args.width is not None:
        call["width"] = args.width
    if args.height is not None:
        call["height"] = args.height
    if "callback_on_step_end" in inspect.signature(pipe.__call__).parameters:
        call["callback_on_step_end"] = finite_guard(args)
    return call


def _image_settings(args: argparse.Namespace, steps: int, cfg: float) -> dict[str, Any]:
    """What changes an image besides its seed: part of its file name's hash. Best-of-N only
    picks a seed (the image of a seed is the same), so ``--best-of 1 --seed S`` rewrites the
    file that best-of-N wrote for seed S."""
    keys = ("negative_prompt", "model", "config", "variant", "dtype", "lora", "scheduler",
            "karras", "width", "height", "clip_guidance", "clip_guidance_mode",
            "guide_decoder", "guide_clip")  # fmt: skip
    settings = {k: getattr(args, k, None) for k in keys}
    return {**settings, "steps": steps, "cfg": cfg}


def _record(args: argparse.Namespace, pipe, path: Path, image, run: dict[str, Any]) -> dict:
    """The sidecar of one image (``run``: its seed, steps, cfg, scores, picks, extras)."""
    record = {
        "file": path.name,
        "prompt": args.prompt,
        "negative_prompt": args.negative_prompt,
        "plain_prompt": plain(args.prompt),
        "model": args.model,
        "seed": run["seed"],
        "steps": run["steps"],
        "scheduler": type(pipe.scheduler).__name__,
        "karras": bool(getattr(pipe.scheduler.config, "use_karras_sigmas", False)),
        "cfg_scale": run["cfg"],
        "size": list(image.size),
        "dtype": str(getattr(pipe, "dtype", "")).removeprefix("torch.") or None,
        "scores": run["scores"],
    }
    if args.lora:
        record["loras"] = [list(pair) for pair in args.lora]
    if args.clip_guidance:
        record["clip_guidance"] = {
            "scale": args.clip_guidance,
            "mode": args.clip_guidance_mode,
            "decoder": args.guide_decoder,
        }
    if args.region:
        record["regions"] = {
            "regions": [
                {"prompt": r.prompt, "box": list(r.box), "weight": r.weight} for r in args.region
            ],
            "blend": args.region_blend,
            "place": args.region_place,
        }
    if run.get("layout") is not None:
        record["layout"] = layout_record(run["layout"])
    if run["picks"] is not None:
        record["best_of"] = run["picks"]
    record.update(run["extras"])
    return record


def _write(path: Path, image, record: dict, scheduler) -> None:
    """The sidecar, then its PNG (with the A1111 ``parameters`` chunk): a kill between the
    two leaves no PNG without its sidecar."""
    data = png_bytes(image, parameters_text(record, scheduler))
    write_atomic(path.with_suffix(".json"), json.dumps(record, indent=2, allow_nan=False) + "\n")
    write_atomic(path, data)


def _this_process_share(args: argparse.Namespace) -> argparse.Namespace | None:
    """Under ``accelerate launch`` / ``torchrun``, this process's share of the images
    (:mod:`clipguide.distributed.processes`); the options unchanged in a single process."""
    from clipguide.distributed.processes import launched_processes, process_state, share_of_images

    if launched_processes() == 1:
        return args
    try:
        return share_of_images(args, process_state(args.device))
    except (ImportError, RuntimeError, ValueError) as err:
        raise CLIError(f"cannot split the images over the launched processes: {err}", 1) from err


def run(args: argparse.Namespace) -> int:
    """Generate ``--num-images`` images and their sidecars; returns the exit code."""
    model = check_args(args)
    args = _this_process_share(args)
    if args is None:
        return 0
    steps = args.steps or model.steps
    cfg = args.cfg_scale if args.cfg_scale is not None else model.cfg
    pipe = _load(args)
    guide, vision = load_guide(pipe, args, model)
    names = args.score_with if args.score_with is not None else list(model.score_with)
    scorers = _load_scorers(names, {vision: guide} if guide is not None and vision else {})
    seeds = [args.seed + i for i in range(args.num_images)]
    call = _call(args, pipe, seeds, steps, cfg)
    text = plain(args.prompt)
    images, seeds, picks, candidates, layouts = sample(
        pipe, call, seeds, args, guide, vision, model, text
    )
    scores = _scores(images, text, scorers)
    extras = model.annotate(images, text) if model.annotate else [{} for _ in images]
    settings = _image_settings(args, steps, cfg)
    for i, (seed, image) in enumerate(zip(seeds, images, strict=True)):
        path = Path(args.out) / f"{file_stem(args.prompt, settings, seed, text)}.png"
        run_info = dict(
            seed=seed, steps=steps, cfg=cfg, scores={k: v[i] for k, v in scores.items()},
            picks=picks[i] if picks else None, extras=extras[i], layout=layouts[i],
        )  # fmt: skip
        record = _record(args, pipe, path, image, run_info)
        sheet = write_sheet(path, candidates[i], record, model) if candidates else None
        if sheet is not None:
            record["best_of"]["sheet"] = sheet.name
        _write(path, image, record, pipe.scheduler)
        say(summary_line(path, record, sheet))
    return 0
