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
import json
import logging
import math
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
from clipguide.cli.files import remove_stale_temps, write_atomic
from clipguide.cli.score_files import (
    IMAGE_EXTENSIONS,
    ResultWriter,
    display_path,
    expand_paths,
    journal_of,
    output_format,
    path_key,
    read_prompt_file,
    read_rows,
    row_key,
)
from clipguide.cli.score_ray import RAY_ONLY, ray_options, run_score_ray
from clipguide.cli.score_settings import (
    as_option,
    changed_setting,
    judge_settings,
    read_settings,
    settings_file,
)
from clipguide.cli.summary import plural, say
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
  clipguide score --prompts manifest.parquet --out scores/ --engine ray --address auto \\
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
    """Decode batches of ``size`` in a thread pool, one batch ahead of the model."""

    def load(part: list[Path]) -> list[tuple[Any, str]]:
        decoded: dict[Path, tuple[Any, str]] = {}  # an image with several prompts: once
        for path in part:
            if path not in decoded:
                decoded[path] = _load(path)
        return [decoded[path] for path in part]

    for batch, parts in prefetched(batched(paths, size), load, workers):
        results = flat(parts)
        yield [(p, image, error) for p, (image, error) in zip(batch, results, strict=True)]


def _round(x: float) -> float:
    return round(float(x), 6)


Pair = tuple[Path, "str | None"]  # (image, prompt): what one row scores


def _score_plan(args: argparse.Namespace) -> tuple[Path, str, list[Pair]]:
    """``--out``, its format and the (image, prompt) pairs, all checked before any model:
    an image with several prompts in ``--prompts`` gives a pair for each."""
    out = Path(args.out)
    try:
        fmt = output_format(out, args.format)
    except ValueError as err:
        raise CLIError(str(err)) from None
    check_writable_file(out, "--out")
    if args.resume and args.overwrite:
        raise CLIError("--resume and --overwrite contradict each other; pass one of them")
    taken = out.exists() or journal_of(out).exists() or settings_file(out).exists()
    if not args.resume and not args.overwrite and taken:
        raise CLIError(f"--out {out} exists; pass --resume to continue it or --overwrite")
    try:
        listed = read_prompt_file(args.prompts) if args.prompts else None
    except ValueError as err:
        raise CLIError(str(err)) from None
    if not args.paths:
        pairs = [(Path(path), prompt) for path, prompt in listed or []]
    elif listed is None:
        pairs = [(path, args.prompt) for path in expand_paths(args.paths)]
    else:
        by_path: dict[str, list[str | None]] = {}
        for path, prompt in listed:
            by_path.setdefault(path_key(path), []).append(prompt)
        paths = expand_paths(args.paths)
        pairs = [(p, prompt) for p in paths for prompt in by_path.get(path_key(p), [None])]
    if not pairs:
        raise CLIError(
            f"no image files ({', '.join(IMAGE_EXTENSIONS)}) in PATHS {args.paths}"
            if args.paths
            else "no images: pass PATHS (files or folders) or --prompts FILE"
        )
    first: dict[tuple[str, str | None], Pair] = {}
    for path, prompt in pairs:  # the same file and prompt named twice is scored once
        first.setdefault(row_key(path, prompt), (path, prompt))
    return out, fmt, list(first.values())


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    from clipguide.scoring.metrics import HESSEL_SCALE

    scale = HESSEL_SCALE if args.hessel else 100.0
    return judge_settings(args.model, args.pretrained, args.dtype, scale, robust=args.robust)


def _check_resumed(out: Path, settings: dict[str, Any], rows: int) -> None:
    """The rows in ``out`` were scored with ``settings``, or a one-line refusal naming the
    option that differs (old and new value)."""
    try:
        old = read_settings(settings_file(out))
    except ValueError as err:
        raise CLIError(f"--out {out} cannot be resumed: {err}") from None
    if old is None:
        if rows:
            logger.warning(
                "--out %s: no record of the judge it was scored with (%s is missing: written by "
                "an older clipguide); resuming without checking --model, --dtype, --hessel",
                out, settings_file(out).name,
            )  # fmt: skip
        return
    change = changed_setting(old, settings, as_option)
    if change is not None:
        raise CLIError(
            f"--out {out} was scored with {change}; resume with the same options, or pass "
            "--overwrite or another --out"
        )


def _rows(batch: list, prompts: list, source: str, scorer: Any, robust: bool) -> list[dict]:
    """One row per (image, prompt) of a decoded batch: its scores, or the error that
    prevented them."""
    from clipguide.scoring import clip_score

    rows: list[dict[str, Any]] = []
    ready = []
    for (path, image, error), prompt in zip(batch, prompts, strict=True):
        if prompt is None:
            error = error or f"no prompt for this image in {source}"
        row = {"path": display_path(path), "prompt": prompt, "cosine": None, "clipscore": None}
        row["error"] = error
        rows.append(row)
        if not error:
            ready.append((row, image))
    if not ready:
        return rows
    images, texts = [image for _, image in ready], [row["prompt"] for row, _ in ready]
    cos = scorer.cosine(images, texts)
    scores = robust and scorer.robust_scores(images, texts)
    for j, (row, _) in enumerate(ready):
        if not math.isfinite(float(cos[j])):  # kept valid JSON: an error row
            row["error"] = f"the model gave a non-finite score ({float(cos[j])})"
            continue
        row["cosine"] = _round(cos[j])
        row["clipscore"] = _round(clip_score(cos[j], scorer.scale))
        if scores:
            for field, view in zip(ROBUST_FIELDS, ("jpeg", "crop", "grayscale"), strict=True):
                value = float(getattr(scores, view)[j])
                row[field] = _round(value) if math.isfinite(value) else None
    return rows


def run_score(args: argparse.Namespace) -> int:
    """Score images against prompts and write one row per (image, prompt)."""
    from tqdm.auto import tqdm

    if args.engine == "ray":
        return run_score_ray(args)
    given = [flag for dest, flag in RAY_ONLY.items() if getattr(args, dest) is not None]
    if given:
        raise CLIError(f"{given[0]} needs --engine ray")

    out, fmt, pairs = _score_plan(args)
    fields = FIELDS + (ROBUST_FIELDS if args.robust else ())
    settings = _settings(args)
    try:
        done = read_rows(out, fmt) if args.resume else []
    except (ValueError, UnicodeDecodeError, csv.Error) as err:
        raise CLIError(f"--out {out} cannot be resumed: {err}") from None
    if args.resume:
        _check_resumed(out, settings, len(done))
    done_keys = {row_key(row["path"], row.get("prompt")) for row in done}
    todo = [(path, prompt) for path, prompt in pairs if row_key(path, prompt) not in done_keys]
    scorer = load_scorer(args, args.batch_size) if todo else None
    if args.overwrite:  # only now: a model that fails to load leaves the old output alone
        for old in (out, journal_of(out), settings_file(out)):
            old.unlink(missing_ok=True)
    remove_stale_temps(out)  # left by a killed run
    write_atomic(settings_file(out), json.dumps({"settings": settings}, indent=2) + "\n")
    writer = ResultWriter(out, fmt, done, fields, args.checkpoint_seconds)
    bar = tqdm(
        total=len(pairs), initial=len(pairs) - len(todo), unit="row", disable=args.no_progress
    )
    source = args.prompts or "--prompts"
    try:
        batches = loaded_batches([path for path, _ in todo], args.batch_size, args.workers)
        for start, batch in zip(range(0, len(todo), args.batch_size), batches, strict=True):
            prompts = [prompt for _, prompt in todo[start : start + len(batch)]]
            writer.add(_rows(batch, prompts, source, scorer, args.robust))
            bar.update(len(batch))
    finally:
        bar.close()
        writer.close()  # also on errors and Ctrl-C: what was scored is kept
    errors = plural(sum(1 for row in writer.rows if row.get("error")), "error")
    kept = f", {len(done)} kept from before" if args.resume else ""
    say(f"{out}: {plural(len(writer.rows), 'row')}, {errors} ({len(todo)} scored now{kept})")
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
