"""``clipguide score``: CLIPScore for folders of images (``cli_rerank`` reuses its parts).

``score`` writes one row per image (path, prompt, cosine, clipscore, error) to CSV or JSONL.
The output file is only ever replaced whole (temp file + ``os.replace``); rows scored since
the last replacement are appended, batch by batch, to ``OUT.journal.jsonl`` next to it, so a
killed run loses at most the batch in flight and ``--resume`` continues without duplicates
(and removes the temporary files a kill left). The judge defaults to bigG, as ``load_clip``;
``--model shapes`` picks the micro world's CLIP. Options, ``--prompts`` and ``--out`` are
checked before the model loads.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from clipguide.cli import CLIError
from clipguide.cli_args import (
    check_writable_file,
    device_arg,
    non_negative_float,
    positive_int,
)
from clipguide.files import atomic_open, remove_stale_temps
from clipguide.model.images import UnreadableImageError, load_image
from clipguide.scoring.batches import batched, flat, prefetched

__all__ = [
    "register",
    "run_score",
    "read_prompt_file",
    "read_rows",
    "expand_paths",
    "load_scorer",
    "loaded_batches",
    "model_args",
    "IMAGE_EXTENSIONS",
    "FIELDS",
]

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
FIELDS = ("path", "prompt", "cosine", "clipscore", "error")
ROBUST_FIELDS = ("clipscore_jpeg", "clipscore_crop", "clipscore_grayscale")
# as load_clip's defaults (clipguide.model.openclip; not imported here to keep --help fast)
DEFAULT_MODEL = "ViT-bigG-14"
DEFAULT_PRETRAINED = "laion2b_s39b_b160k"

SCORE_EXAMPLE = """examples:
  clipguide score outputs/ --prompt "two red circles above a blue square" --out scores.csv
  clipguide score outputs/ --prompt "a red circle" --out micro.csv --model shapes
  clipguide score --prompts captions.jsonl --out scores.jsonl --resume
  (captions.jsonl: {"path": "img/0001.png", "prompt": "..."} per line; CSV needs path,prompt
   columns; relative paths in FILE are relative to FILE's folder)"""


# -- inputs ----------------------------------------------------------------------------------
def expand_paths(paths: Iterable[str | Path]) -> list[Path]:
    """Files as given; folders expanded (recursively, sorted) to their image files."""
    out: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = (p for p in path.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
            out.extend(sorted(p for p in found if p.is_file()))
        else:
            out.append(path)  # missing files are reported per row, not fatal
    return out


def _key(path: str | Path) -> str:
    return os.path.abspath(os.fspath(path))


def read_prompt_file(file: str | Path) -> dict[str, str]:
    """Map absolute image path -> prompt from a CSV (path,prompt columns) or JSONL file."""
    file = Path(file)
    base = file.parent
    if not file.is_file():
        what = "is a folder" if file.is_dir() else "does not exist"
        raise ValueError(f"--prompts {file} {what}; expected a CSV or JSONL file")
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(
            f"--prompts {file} is not UTF-8 text ({err}); expected CSV or JSONL"
        ) from None
    is_jsonl = file.suffix.lower() in (".jsonl", ".ndjson", ".json") or text.lstrip()[:1] == "{"
    records: list[dict[str, Any]] = []
    if is_jsonl:
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise ValueError(
                        f"--prompts {file}: line {number} is not JSON: {err}"
                    ) from None
    else:
        records = list(csv.DictReader(text.splitlines()))
    mapping: dict[str, str] = {}
    for number, record in enumerate(records, 1):
        if not isinstance(record, dict) or "path" not in record or "prompt" not in record:
            got = sorted(record) if isinstance(record, dict) else type(record).__name__
            raise ValueError(
                f"--prompts {file}: record {number} needs 'path' and 'prompt' fields, got {got}"
            )
        mapping[_key(base / str(record["path"]))] = str(record["prompt"])
    if not mapping:
        raise ValueError(f"--prompts {file}: no records found")
    return mapping


# -- output ----------------------------------------------------------------------------------
def _format(out: Path, fmt: str | None) -> str:
    if fmt:
        return fmt
    if out.suffix.lower() in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    if out.suffix.lower() in (".csv", ".tsv", ""):
        return "csv"
    raise ValueError(
        f"--out {out}: cannot tell the format from {out.suffix!r} (.csv, .tsv, .jsonl, .ndjson, "
        f".json); pass --format csv|jsonl"
    )


def _journal(out: Path) -> Path:
    return out.with_name(out.name + ".journal.jsonl")


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a line torn by a kill: that row is scored again
            continue
    return rows


def read_rows(out: Path, fmt: str) -> list[dict[str, Any]]:
    """Rows already in ``out`` and its journal, first occurrence of each path kept."""
    rows: list[dict[str, Any]] = []
    if out.exists():
        if fmt == "jsonl":
            rows = _read_jsonl(out)
        else:
            with out.open(newline="", encoding="utf-8") as handle:
                rows = list(csv.DictReader(handle))
    if _journal(out).exists():
        rows += _read_jsonl(_journal(out))
    seen: set[str] = set()
    unique = []
    for row in rows:
        if not isinstance(row, dict) or not row.get("path"):
            raise ValueError(
                f"--out {out}: a row without a 'path' ({str(row)[:80]}): not a score file to "
                "resume; pass --overwrite to replace it"
            )
        key = _key(row["path"])
        if key not in seen:
            seen.add(key)
            unique.append(row)
    return unique


def _write_rows(out: Path, fmt: str, rows: list[dict[str, Any]], fields: tuple[str, ...]) -> None:
    """Replace ``out`` whole with ``rows`` (clipguide.files.atomic_open)."""
    with atomic_open(out, "w", newline="", encoding="utf-8") as handle:
        if fmt == "jsonl":
            handle.writelines(json.dumps(row, allow_nan=False) + "\n" for row in rows)
        else:
            writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
            writer.writeheader()
            writer.writerows({k: ("" if v is None else v) for k, v in r.items()} for r in rows)


class ResultWriter:
    """Journal each batch durably; replace the output whole every ``checkpoint_s`` seconds."""

    def __init__(
        self, out: Path, fmt: str, rows: list[dict], fields: tuple[str, ...], checkpoint_s: float
    ):
        self.out, self.fmt, self.fields, self.checkpoint_s = out, fmt, fields, checkpoint_s
        self.rows = list(rows)
        self.last = time.monotonic()
        out.parent.mkdir(parents=True, exist_ok=True)
        self.journal = _journal(out).open("a", encoding="utf-8")

    def add(self, rows: list[dict[str, Any]]) -> None:
        self.rows.extend(rows)
        self.journal.write("".join(json.dumps(row, allow_nan=False) + "\n" for row in rows))
        self.journal.flush()
        os.fsync(self.journal.fileno())
        if time.monotonic() - self.last >= self.checkpoint_s:
            self.checkpoint()

    def checkpoint(self) -> None:
        _write_rows(self.out, self.fmt, self.rows, self.fields)
        self.journal.truncate(0)  # rows now live in the output (duplicates are dropped on read)
        self.last = time.monotonic()

    def close(self) -> None:
        self.checkpoint()
        self.journal.close()
        _journal(self.out).unlink(missing_ok=True)


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
    return CLIPScorer(clip, batch_size=batch_size, scale=scale, progress=False)  # ours: per image


def _load(path: Path) -> tuple[Any, str]:
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
        fmt = _format(out, args.format)
    except ValueError as err:
        raise CLIError(str(err)) from None
    check_writable_file(out, "--out")
    if args.resume and args.overwrite:
        raise CLIError("--resume and --overwrite contradict each other; pass one of them")
    if not args.resume and not args.overwrite and (out.exists() or _journal(out).exists()):
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
        first.setdefault(_key(path), path)
    return out, fmt, prompts, list(first.values())


def run_score(args: argparse.Namespace) -> int:
    """Score images against prompts and write one row per image."""
    from tqdm.auto import tqdm

    from clipguide.scoring import clip_score

    out, fmt, prompts, paths = _score_plan(args)
    fields = FIELDS + (ROBUST_FIELDS if args.robust else ())
    try:
        done = read_rows(out, fmt) if args.resume else []
    except (ValueError, UnicodeDecodeError, csv.Error) as err:
        raise CLIError(f"--out {out} cannot be resumed: {err}") from None
    done_keys = {_key(row["path"]) for row in done}
    todo = [p for p in paths if _key(p) not in done_keys]
    scorer = load_scorer(args, args.batch_size) if todo else None
    if args.overwrite:  # only now: a model that fails to load leaves the old output alone
        out.unlink(missing_ok=True)
        _journal(out).unlink(missing_ok=True)
    remove_stale_temps(out)  # left by a killed run
    writer = ResultWriter(out, fmt, done, fields, args.checkpoint_seconds)
    bar = tqdm(
        total=len(paths), initial=len(paths) - len(todo), unit="img", disable=args.no_progress
    )
    errors = 0
    try:
        for batch in loaded_batches(todo, args.batch_size, args.workers):
            rows: list[dict[str, Any]] = []
            ready = []
            for path, image, error in batch:
                prompt = args.prompt if prompts is None else prompts.get(_key(path))
                if prompt is None:
                    error = error or f"no prompt for this image in {args.prompts}"
                row = {
                    "path": os.fspath(path),
                    "prompt": prompt,
                    "cosine": None,
                    "clipscore": None,
                    "error": error,
                }
                rows.append(row)
                if not error:
                    ready.append((row, image))
            if ready:
                images = [image for _, image in ready]
                texts = [row["prompt"] for row, _ in ready]
                cos = scorer.cosine(images, texts)
                robust = scorer.robust_scores(images, texts) if args.robust else None
                for j, (row, _) in enumerate(ready):
                    if not math.isfinite(float(cos[j])):  # kept valid JSON: an error row
                        row["error"] = f"the model gave a non-finite score ({float(cos[j])})"
                        continue
                    row["cosine"] = _round(cos[j])
                    row["clipscore"] = _round(clip_score(cos[j], scorer.scale))
                    if robust is not None:
                        for field, view in zip(
                            ROBUST_FIELDS, ("jpeg", "crop", "grayscale"), strict=True
                        ):
                            value = float(getattr(robust, view)[j])
                            row[field] = _round(value) if math.isfinite(value) else None
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
    which.add_argument("--prompts", metavar="FILE", help="CSV or JSONL with path and prompt")
    score.add_argument("--out", required=True, help="output .csv or .jsonl")
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
    score.set_defaults(func=run_score)
