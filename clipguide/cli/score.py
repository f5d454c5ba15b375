"""Score images against prompts: CLIPScore per image, to CSV or JSONL.

Writes one row per image (path, prompt, cosine, clipscore, error). The output file is only
ever replaced whole; rows scored since the last replacement are appended, batch by batch, to
OUT.journal.jsonl next to it, so a killed run loses at most the batch in flight and --resume
continues without duplicates (and removes the temporary files a kill left). The judge
defaults to bigG, as load_clip; --model shapes picks the micro world's CLIP. Options,
--prompts and --out are checked before the model loads.
"""
# The docstring above is the --help text. rerank reuses this module's loading and batching;
# the output files (journal, atomic rewrites, --resume) are score_files' job.

from __future__ import annotations

import argparse
import csv
import logging
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from clipguide.cli.args import (
    CLIError,
    check_writable_file,
    device_arg,
    non_negative_float,
    positive_int,
)
from clipguide.cli.files import remove_stale_temps
from clipguide.cli.score_files import (
    IMAGE_EXTENSIONS,
    ResultWriter,
    expand_paths,
    journal_of,
    output_format,
    path_key,
    read_prompt_file,
    read_rows,
)
from clipguide.cli.score_ray import RAY_ONLY, ray_options, run_score_ray
from clipguide.model.defaults import DEFAULT_MODEL, DEFAULT_PRETRAINED
from clipguide.scoring.batches import batched, flat, prefetched

__all__ = [
    "register",
    "run_score",
    "load_scorer",
    "loaded_batches",
    "model_args",
    "FIELDS",
]

logger = logging.getLogger(__name__)

FIELDS = ("path", "prompt", "cosine", "clipscore", "error")
ROBUST_FIELDS = ("clipscore_jpeg", "clipscore_crop", "clipscore_grayscale")

SCORE_EXAMPLE = """examples:
  clipguide score outputs/ --prompt "two red circles above a blue square" --out scores.csv
  clipguide score outputs/ --prompt "a red circle" --out micro.csv --model shapes
  clipguide score --prompts captions.jsonl --out scores.jsonl --resume
  clipguide score --prompts manifest.parquet --out scores/ --engine ray --address auto \
      --concurrency 8 --gpus-per-worker 1 --batch-size 256 --resume
  (captions.jsonl: {"path": "img/0001.png", "prompt": "..."} per line; CSV needs path,prompt
   columns; relative paths in FILE are relative to FILE's folder)"""


# -- running ---------------------------------------------------------------------------------
def load_scorer(args: argparse.Namespace, batch_size: int) -> Any:
    """The judge for ``--model`` (default bigG); one line naming the option if it fails."""
    import torch

    from clipguide.model import WeightsNotFoundError, load_clip
    from clipguide.scoring import HESSEL_SCALE, CLIPScorer

    source = args.model or DEFAULT_MODEL
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    kwargs: dict[str, Any] = {"device": device, "dtype": args.dtype}
    if args.pretrained is not None:
        kwargs["pretrained"] = args.pretrained
    try:
        clip = load_clip(source, **kwargs)
    except WeightsNotFoundError as err:
        if args.model is None and args.pretrained is None:
            raise CLIError(
                f"the default judge {DEFAULT_MODEL}/{DEFAULT_PRETRAINED} is not on this machine "
                f"and cannot be downloaded: point --model at its weights (local-dir:FOLDER "
                f"holding open_clip_config.json + open_clip_model.safetensors, or a "
                f"transformers CLIP folder), or pass --model shapes for the micro world's CLIP",
                code=1,
            ) from err
        raise CLIError(f"--model {source!r}: {err}", code=1) from err
    except Exception as err:  # noqa: BLE001 - any loading failure names the option
        raise CLIError(f"--model {source!r}: {err}", code=1) from err
    scale = HESSEL_SCALE if args.hessel else 100.0
    # ours: per image; a job never changes the judge's weights, so one text-cache key serves it
    return CLIPScorer(clip, batch_size=batch_size, scale=scale, progress=False, hold_keys=True)


def _load(path: Path) -> tuple[Any, str]:
    from clipguide.model.images import UnreadableImageError, load_image

    try:
        return load_image(path), ""
    except UnreadableImageError as err:
        return None, err.reason


def loaded_batches(
    paths: list[Path], size: int, workers: int
) -> Iterator[list[tuple[Path, Any, str]]]:
    """Decode batches in a thread pool, one batch ahead of the model."""

    def load(part: list[Path]) -> list[tuple[Any, str]]:
        return [_load(path) for path in part]

    for batch, parts in prefetched(batched(paths, size), load, workers):
        results = flat(parts)
        yield [(p, image, error) for p, (image, error) in zip(batch, results, strict=True)]


def _round(x: float) -> float:
    return round(float(x), 6)


def _score_plan(args: argparse.Namespace) -> tuple[Path, str, dict | None, list[Path]]:
    """``--out``, its format, the prompts and the image paths, all checked before any model."""
    out = Path(args.out)
    try:
        fmt = output_format(out, args.format)
    except ValueError as err:
        raise CLIError(str(err)) from None
    check_writable_file(out, "--out")
    if args.resume and args.overwrite:
        raise CLIError("--resume and --overwrite contradict each other; pass one of them")
    if not args.resume and not args.overwrite and (out.exists() or journal_of(out).exists()):
        raise CLIError(f"--out {out} exists; pass --resume to continue it or --overwrite")
    try:
        prompts = read_prompt_file(args.prompts) if args.prompts else None
    except ValueError as err:
        raise CLIError(str(err)) from None
    paths = expand_paths(args.paths) if args.paths else [Path(p) for p in (prompts or {})]
    if not paths:
        raise CLIError(
            f"no image files ({', '.join(IMAGE_EXTENSIONS)}) in PATHS {args.paths}"
            if args.paths
            else "no images: pass PATHS (files or folders) or --prompts FILE"
        )
    first: dict[str, Path] = {}
    for path in paths:  # the same file named twice is scored once
        first.setdefault(path_key(path), path)
    return out, fmt, prompts, list(first.values())


def _rows(batch: list, args: argparse.Namespace, prompts: dict | None, scorer: Any) -> list[dict]:
    """One row per image of a decoded batch: its scores, or the error that prevented them."""
    from clipguide.scoring import clip_score

    rows: list[dict[str, Any]] = []
    ready = []
    for path, image, error in batch:
        prompt = args.prompt if prompts is None else prompts.get(path_key(path))
        if prompt is None:
            error = error or f"no prompt for this image in {args.prompts}"
        row = {"path": os.fspath(path), "prompt": prompt, "cosine": None, "clipscore": None}
        row["error"] = error
        rows.append(row)
        if not error:
            ready.append((row, image))
    if not ready:
        return rows
    images, texts = [image for _, image in ready], [row["prompt"] for row, _ in ready]
    cos = scorer.cosine(images, texts)
    robust = scorer.robust_scores(images, texts) if args.robust else None
    for j, (row, _) in enumerate(ready):
        if not math.isfinite(float(cos[j])):  # kept valid JSON: an error row
            row["error"] = f"the model gave a non-finite score ({float(cos[j])})"
            continue
        row["cosine"] = _round(cos[j])
        row["clipscore"] = _round(clip_score(cos[j], scorer.scale))
        if robust is not None:
            for field, view in zip(ROBUST_FIELDS, ("jpeg", "crop", "grayscale"), strict=True):
                value = float(getattr(robust, view)[j])
                row[field] = _round(value) if math.isfinite(value) else None
    return rows


def run_score(args: argparse.Namespace) -> int:
    """Score images against prompts and write one row per image."""
    from tqdm.auto import tqdm

    if args.engine == "ray":
        return run_score_ray(args)
    given = [flag for dest, flag in RAY_ONLY.items() if getattr(args, dest) is not None]
    if given:
        raise CLIError(f"{given[0]} needs --engine ray")

    out, fmt, prompts, paths = _score_plan(args)
    fields = FIELDS + (ROBUST_FIELDS if args.robust else ())
    try:
        done = read_rows(out, fmt) if args.resume else []
    except (ValueError, UnicodeDecodeError, csv.Error) as err:
        raise CLIError(f"--out {out} cannot be resumed: {err}") from None
    done_keys = {path_key(row["path"]) for row in done}
    todo = [p for p in paths if path_key(p) not in done_keys]
    scorer = load_scorer(args, args.batch_size) if todo else None
    if args.overwrite:  # only now: a model that fails to load leaves the old output alone
        out.unlink(missing_ok=True)
        journal_of(out).unlink(missing_ok=True)
    remove_stale_temps(out)  # left by a killed run
    writer = ResultWriter(out, fmt, done, fields, args.checkpoint_seconds)
    bar = tqdm(
        total=len(paths), initial=len(paths) - len(todo), unit="img", disable=args.no_progress
    )
    errors = 0
    try:
        for batch in loaded_batches(todo, args.batch_size, args.workers):
            rows = _rows(batch, args, prompts, scorer)
            errors += sum(1 for row in rows if row["error"])
            writer.add(rows)
            bar.update(len(rows))
    finally:
        bar.close()
        writer.close()  # also on errors and Ctrl-C: what was scored is kept
    logger.info(
        "scored %d images (%d unreadable or without prompt) into %s", len(todo), errors, out
    )
    return 0


# -- parsers ---------------------------------------------------------------------------------
def model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        help="CLIP to judge with: open_clip name, hf-hub:ID, local-dir:FOLDER, a transformers "
        f"folder, or 'shapes' (the micro world's CLIP); default {DEFAULT_MODEL} with "
        f"--pretrained {DEFAULT_PRETRAINED} (bigG, as load_clip)",
    )
    parser.add_argument("--pretrained", help="open_clip pretrained tag or checkpoint for --model")
    parser.add_argument(
        "--device",
        type=device_arg,
        default=None,
        help="torch device (default: cuda if available, else cpu)",
    )
    parser.add_argument("--dtype", choices=("fp32", "fp16", "bf16"), default=None)
    parser.add_argument("--batch-size", type=positive_int, default=32, help="images per forward")
    parser.add_argument(
        "--hessel", action="store_true", help="scale 2.5 (Hessel et al.) instead of 100"
    )


def register(subparsers: Any) -> None:
    """Add the ``score`` subcommand."""
    fmt = argparse.RawDescriptionHelpFormatter
    score = subparsers.add_parser(
        "score", help="CLIPScore per image, to CSV or JSONL", description=__doc__,
        epilog=SCORE_EXAMPLE, formatter_class=fmt,
    )  # fmt: skip
    score.add_argument("paths", nargs="*", metavar="PATHS", help="image files or folders")
    which = score.add_mutually_exclusive_group(required=True)
    which.add_argument("--prompt", help="one prompt for every image")
    which.add_argument(
        "--prompts", metavar="FILE",
        help="CSV or JSONL with path and prompt (Parquet too with --engine ray)",
    )  # fmt: skip
    score.add_argument(
        "--out", required=True, help="output .csv or .jsonl (--engine ray: a folder)"
    )
    score.add_argument("--format", choices=("csv", "jsonl"), help="default: from --out's suffix")
    score.add_argument("--resume", action="store_true", help="skip images already in --out")
    score.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    score.add_argument(
        "--robust", action="store_true", help="also score JPEG-75, 0.9-crop, grayscale views"
    )
    score.add_argument("--workers", type=positive_int, default=4, help="image-decoding threads")
    score.add_argument(
        "--checkpoint-seconds", type=non_negative_float, default=30.0,
        help="how often the output file is rewritten whole (batches are journalled meanwhile)",
    )  # fmt: skip
    score.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    model_args(score)
    ray_options(score)
    score.set_defaults(func=run_score)
