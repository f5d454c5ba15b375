"""``clipguide generate``: text to image with the shipped micro world or any diffusers model.

Writes one PNG per image and a JSON sidecar next to it with the prompt, seed, steps,
scheduler, CLIP scores and, for the micro world, the oracle's verdict. Each file is replaced
whole (``clipguide.cli.files``); the sidecar is written before its PNG, so a PNG never lacks its
sidecar, and a rerun with the same arguments rewrites every pair (a kill leaves at most a
sidecar whose PNG is missing). All options, the output folder and the model name are checked
before any model loads; the CLIPs named by ``--score-with`` load before sampling.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
from pathlib import Path
from typing import Any

from clipguide.cli.args import (
    DEFAULT_PIPELINE,
    MAX_SCALE,
    MAX_SEED,
    MAX_SIZE,
    CLIError,
    check_model,
    check_output_folder,
    device_arg,
    positive_int,
    scale_arg,
    seed_arg,
    size_arg,
)
from clipguide.cli.files import write_atomic
from clipguide.cli.models import ANY_MODEL, NamedModel, named_model
from clipguide.cli.regions import add_region_options, check_region_args, layout_record
from clipguide.cli.sampling import decoder_choice, finite_guard, load_guide, sample
from clipguide.cli.schedulers import SCHEDULERS, scheduler_from_config
from clipguide.cli.summary import summary_line, write_sheet
from clipguide.scoring.methods import METHODS

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
    p.add_argument("prompt", help="what to draw")
    p.add_argument("--out", default="out", help="output folder (default: out/); made if missing")
    p.add_argument(
        "--model",
        default=DEFAULT_PIPELINE,
        help="'shapes' (the shipped micro world, default) or a diffusers repo id / folder",
    )
    p.add_argument(
        "--seed", type=seed_arg, default=0, help="seed of the first image (then +1, ...)"
    )
    p.add_argument(
        "--steps", type=positive_int, default=None, help="sampling steps (default 20 / 30)"
    )
    p.add_argument("--num-images", type=positive_int, default=1, help="images to write (default 1)")
    p.add_argument(
        "--scheduler", choices=SCHEDULERS, default=None, help="sampler (default: the model's)"
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
        "--size",
        type=size_arg,
        default=None,
        help=f"image side in pixels, a multiple of 8 up to {MAX_SIZE} (default: the model's)",
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
        default="structured",
        help="how --best-of ranks its candidates (default: structured, which sees "
        "attributes, counts and relations; clipscore: plain CLIPScore)",
    )


def slug(text: str, limit: int = 48) -> str:
    """A file-name-safe short form of a prompt."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit] or "image"


def load_pipeline(model: str, scheduler: str | None, device: str | None, progress: bool):
    """A model registered by name (the micro world), or any diffusers text-to-image pipeline
    by repo id / folder."""
    import torch

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    named = named_model(model)
    if named is not None:
        return named.load(device, scheduler, progress)
    from diffusers import AutoPipelineForText2Image

    dtype = torch.float16 if str(device).startswith("cuda") else torch.float32
    pipe = AutoPipelineForText2Image.from_pretrained(model, dtype=dtype)
    if scheduler is not None:
        pipe.scheduler = scheduler_from_config(scheduler, pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=not progress)
    return pipe.to(device)


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


def _check_args(args: argparse.Namespace) -> NamedModel:
    """Everything about the options that can be known before a model loads; the defaults of
    ``--model`` (a registered model's own, else those of any diffusers pipeline)."""
    model = named_model(args.model) or ANY_MODEL
    if args.best_of is None:
        args.best_of = model.best_of
    last = args.seed + args.num_images * args.best_of - 1
    if last > MAX_SEED:
        raise CLIError(
            f"--seed {args.seed}: with --num-images {args.num_images} --best-of "
            f"{args.best_of} the seeds run to {last}, past the largest seed 2**64-1"
        )
    args.guide_decoder = decoder_choice(args.guide_decoder, model)
    check_region_args(args, model.layout)
    check_output_folder(Path(args.out), "--out")
    check_model(args.model)
    if args.cfg_scale is not None and 0 < args.cfg_scale < 1:
        log.warning("--cfg %s is below 1: classifier-free guidance is off", args.cfg_scale)
    return model


def _load(args: argparse.Namespace):
    """The pipeline for ``--model``; any failure becomes one line naming the option."""
    try:
        return load_pipeline(args.model, args.scheduler, args.device, not args.no_progress)
    except Exception as err:  # noqa: BLE001 - diffusers/hub raise many types
        raise CLIError(f"--model {args.model!r}: cannot load the pipeline: {err}", 1) from err


def _call(args: argparse.Namespace, pipe, seeds: list[int], steps: int, cfg: float) -> dict:
    """The pipeline's keyword arguments: one generator per image, the finite-latents guard."""
    import inspect

    import torch

    call = dict(
        prompt=args.prompt,
        num_inference_steps=steps,
        guidance_scale=cfg,
        num_images_per_prompt=len(seeds),
        generator=[torch.Generator("cpu").manual_seed(s) for s in seeds],
    )
    if args.size is not None:
        call.update(height=args.size, width=args.size)
    if "callback_on_step_end" in inspect.signature(pipe.__call__).parameters:
        call["callback_on_step_end"] = finite_guard(args)
    return call


def _record(args: argparse.Namespace, pipe, path: Path, image, run: dict[str, Any]) -> dict:
    """The sidecar of one image (``run``: its seed, steps, cfg, scores, picks, extras)."""
    record = {
        "file": path.name,
        "prompt": args.prompt,
        "model": args.model,
        "seed": run["seed"],
        "steps": run["steps"],
        "scheduler": type(pipe.scheduler).__name__,
        "cfg_scale": run["cfg"],
        "size": list(image.size),
        "scores": run["scores"],
    }
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
        }
    if run.get("layout") is not None:
        record["layout"] = layout_record(run["layout"])
    if run["picks"] is not None:
        record["best_of"] = run["picks"]
    record.update(run["extras"])
    return record


def _write(path: Path, image, record: dict) -> None:
    """The sidecar, then its PNG: a kill between the two leaves no PNG without its sidecar."""
    import io

    buf = io.BytesIO()
    image.save(buf, format="PNG")
    write_atomic(path.with_suffix(".json"), json.dumps(record, indent=2, allow_nan=False) + "\n")
    write_atomic(path, buf.getvalue())


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
    model = _check_args(args)
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
    images, seeds, picks, candidates, layouts = sample(
        pipe, call, seeds, args, guide, vision, model
    )
    scores = _scores(images, args.prompt, scorers)
    extras = model.annotate(images, args.prompt) if model.annotate else [{} for _ in images]
    stem = slug(args.prompt)
    for i, (seed, image) in enumerate(zip(seeds, images, strict=True)):
        path = Path(args.out) / f"{stem}-{seed}.png"
        run_info = dict(
            seed=seed, steps=steps, cfg=cfg, scores={k: v[i] for k, v in scores.items()},
            picks=picks[i] if picks else None, extras=extras[i], layout=layouts[i],
        )  # fmt: skip
        record = _record(args, pipe, path, image, run_info)
        sheet = write_sheet(path, candidates[i], record, model) if candidates else None
        if sheet is not None:
            record["best_of"]["sheet"] = sheet.name
        _write(path, image, record)
        print(summary_line(path, record, sheet))
    return 0
