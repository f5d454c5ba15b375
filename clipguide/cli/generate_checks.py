"""``clipguide generate``'s options checked before any model loads: the prompt, the seeds,
the output folder, the model and how it loads, the size; options that would have no effect
are warned about."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from clipguide.cli.args import MAX_SEED, CLIError, check_model, check_output_folder, offline
from clipguide.cli.models import ANY_MODEL, NamedModel, named_model
from clipguide.cli.pipelines import is_single_file
from clipguide.cli.regions import check_region_args
from clipguide.cli.sampling import decoder_choice
from clipguide.cli.schedulers import KARRAS

__all__ = ["check_args", "plain"]

log = logging.getLogger("clipguide.cli.generate")


def plain(prompt: str) -> str:
    """The prompt's plain text, what every CLIP and the oracle compare images with."""
    from clipguide.scoring.captions.parse import plain_prompt

    return plain_prompt(prompt)


def check_args(args: argparse.Namespace) -> NamedModel:
    """Everything about the options that can be known before a model loads; the defaults of
    ``--model`` (a registered model's own, else those of any diffusers pipeline)."""
    if not plain(args.prompt):
        raise CLIError(
            f"prompt {args.prompt!r} has no text to draw (weights and brackets removed); "
            'expected a description such as "a red circle"'
        )
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
    _check_model_options(args, model is not ANY_MODEL)
    _check_size(args)
    _unused_options(args)
    if args.cfg_scale is not None and 0 < args.cfg_scale < 1:
        log.warning("--cfg %s is below 1: classifier-free guidance is off", args.cfg_scale)
    return model


def _check_size(args: argparse.Namespace) -> None:
    """``--size`` is both sides; it cannot be given with ``--width``/``--height``."""
    if args.size is None:
        return
    for name in ("width", "height"):
        if getattr(args, name) is not None:
            raise CLIError(
                f"--size {args.size} and --{name} {getattr(args, name)} both set the {name}; "
                "give --size for square images or --width and --height"
            )
    args.width = args.height = args.size


def _check_model_options(args: argparse.Namespace, named: bool) -> None:
    """--dtype, --variant, --lora, --config and --karras against --model, before loading."""
    if named:
        given = [
            f"--{k} {v}" for k, v in (("dtype", args.dtype), ("variant", args.variant),
                                      ("config", args.config)) if v not in (None, "auto")
        ] + [f"--lora {p}" for p, _ in args.lora or ()]  # fmt: skip
        if given:
            raise CLIError(
                f"{given[0]} is for diffusers models (a folder, repo id or single file); "
                f"--model {args.model} is registered by name and loads its own weights"
            )
    single = is_single_file(args.model)
    if args.config is not None:
        if not single:
            raise CLIError(
                f"--config {args.config!r} is for a single-file --model (.safetensors, .ckpt); "
                f"--model {args.model!r} is not one"
            )
        if not (Path(args.config) / "model_index.json").is_file():
            raise CLIError(
                f"--config {args.config!r} has no model_index.json; expected a diffusers "
                "folder of the checkpoint's architecture (e.g. the base model's)"
            )
    elif single and offline():
        raise CLIError(
            f"--model {args.model!r} is a single-file checkpoint, and diffusers reads its "
            "components' configs from the hub, which is offline (HF_HUB_OFFLINE); pass --config "
            "FOLDER, a diffusers folder of the same architecture (e.g. the base model's)"
        )
    for path, _ in args.lora or ():
        if not Path(path).expanduser().exists() and (path.count("/") != 1 or offline()):
            raise CLIError(
                f"--lora {path!r} is not an existing file or folder"
                + ("" if offline() else " nor a repo id")
                + "; expected PATH[:SCALE] naming a LoRA (.safetensors or a folder holding one)"
            )
    if args.karras and args.scheduler is not None:
        base = args.scheduler.removesuffix("-karras")
        if base not in KARRAS:
            raise CLIError(
                f"--karras: --scheduler {args.scheduler} has no Karras sigmas; accepted with "
                f"{', '.join(KARRAS)}"
            )
        args.scheduler = f"{base}-karras"


def _unused_options(args: argparse.Namespace) -> None:
    """Warn about options that would have no effect, and fill in their defaults."""
    if args.method is not None and args.best_of == 1:
        log.warning("--method %s has no effect with --best-of 1 (nothing to rank)", args.method)
    if args.clip_guidance_mode is not None and not args.clip_guidance:
        log.warning(
            "--clip-guidance-mode %s has no effect without --clip-guidance SCALE > 0",
            args.clip_guidance_mode,
        )
    if getattr(args, "region_place", 0) and not getattr(args, "region", None):
        log.warning(
            "--region-place %s has no effect without --region (layouts read from the prompt "
            "use their policy's placement)",
            args.region_place,
        )
    args.method = args.method or "structured"
    args.clip_guidance_mode = args.clip_guidance_mode or "fast"
