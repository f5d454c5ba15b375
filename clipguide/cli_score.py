"""``clipguide score`` and ``clipguide rerank``: CLIPScore for folders of images.

``score`` writes one row per image (path, prompt, cosine, clipscore, error) to CSV or JSONL.
The output file is only ever replaced whole (temp file + ``os.replace``); rows scored since
the last replacement are appended, batch by batch, to ``OUT.journal.jsonl`` next to it, so a
killed run loses at most the batch in flight and ``--resume`` continues without duplicates.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import tempfile
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from clipguide.images import UnreadableImageError, load_image

__all__ = ["register", "run_score", "run_rerank", "IMAGE_EXTENSIONS", "FIELDS"]

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
FIELDS = ("path", "prompt", "cosine", "clipscore", "error")
ROBUST_FIELDS = ("clipscore_jpeg", "clipscore_crop", "clipscore_grayscale")
DEFAULT_MODEL = "shapes"

SCORE_EXAMPLE = """examples:
  clipguide score outputs/ --prompt "two red circles above a blue square" --out scores.csv
  clipguide score --prompts captions.jsonl --out scores.jsonl --resume
  (captions.jsonl: {"path": "img/0001.png", "prompt": "..."} per line; CSV needs path,prompt
   columns; relative paths in FILE are relative to FILE's folder)"""
RERANK_EXAMPLE = """example:
  clipguide rerank outputs/ --prompt "a green triangle" --top 16 --sheet best.png"""


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
    text = file.read_text(encoding="utf-8")
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
    raise ValueError(f"--out {out}: cannot tell the format from {out.suffix!r}; pass --format")


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
        key = _key(row.get("path", ""))
        if key not in seen:
            seen.add(key)
            unique.append(row)
    return unique


def _write_atomic(out: Path, fmt: str, rows: list[dict[str, Any]], fields: tuple[str, ...]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    handle = tempfile.NamedTemporaryFile(
        "w", dir=out.parent, prefix=f".{out.name}.", suffix=".tmp", delete=False,
        newline="", encoding="utf-8",
    )  # fmt: skip
    try:
        with handle:
            if fmt == "jsonl":
                handle.writelines(json.dumps(row) + "\n" for row in rows)
            else:
                writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
                writer.writeheader()
                writer.writerows({k: ("" if v is None else v) for k, v in r.items()} for r in rows)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(handle.name, out)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise


class ResultWriter:
    """Journal each batch durably; replace the output whole every ``checkpoint_s`` seconds."""

    def __init__(
        self, out: Path, fmt: str, rows: list[dict], fields: tuple[str, ...], checkpoint_s: float
    ):
        self.out, self.fmt, self.fields, self.checkpoint_s = out, fmt, fields, checkpoint_s
        self.rows = list(rows)
        self.last = time.monotonic()
        self.journal = _journal(out).open("a", encoding="utf-8")

    def add(self, rows: list[dict[str, Any]]) -> None:
        self.rows.extend(rows)
        self.journal.write("".join(json.dumps(row) + "\n" for row in rows))
        self.journal.flush()
        os.fsync(self.journal.fileno())
        if time.monotonic() - self.last >= self.checkpoint_s:
            self.checkpoint()

    def checkpoint(self) -> None:
        _write_atomic(self.out, self.fmt, self.rows, self.fields)
        self.journal.truncate(0)  # rows now live in the output (duplicates are dropped on read)
        self.last = time.monotonic()

    def close(self) -> None:
        self.checkpoint()
        self.journal.close()
        _journal(self.out).unlink(missing_ok=True)


# -- running ---------------------------------------------------------------------------------
def _load_scorer(args: argparse.Namespace, batch_size: int) -> Any:
    import torch

    from clipguide.loading import load_clip
    from clipguide.scoring import HESSEL_SCALE, CLIPScorer

    source = args.model or DEFAULT_MODEL
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    kwargs: dict[str, Any] = {"device": device, "dtype": args.dtype}
    if args.pretrained is not None:
        kwargs["pretrained"] = args.pretrained
    try:
        clip = load_clip(source, **kwargs)
    except FileNotFoundError as err:
        if args.model is None:
            raise SystemExit(
                f"clipguide: the default model {DEFAULT_MODEL!r} is not available ({err}); "
                "pass --model (an open_clip name, hf-hub:, local-dir: or a folder)"
            ) from None
        raise
    scale = HESSEL_SCALE if args.hessel else 100.0
    return CLIPScorer(clip, batch_size=batch_size, scale=scale)


def _load(path: Path) -> tuple[Any, str]:
    try:
        return load_image(path), ""
    except UnreadableImageError as err:
        return None, err.reason


def _loaded_batches(
    paths: list[Path], size: int, workers: int
) -> Iterator[list[tuple[Path, Any, str]]]:
    """Decode batches in a thread pool, one batch ahead of the model."""
    batches = [paths[i : i + size] for i in range(0, len(paths), size)]
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        pending = pool.map(_load, batches[0]) if batches else None
        for i, batch in enumerate(batches):
            results = list(pending)  # type: ignore[arg-type]
            if i + 1 < len(batches):
                pending = pool.map(_load, batches[i + 1])
            yield [(p, image, error) for p, (image, error) in zip(batch, results, strict=True)]


def _round(x: float) -> float:
    return round(float(x), 6)


def run_score(args: argparse.Namespace) -> int:
    """Score images against prompts and write one row per image."""
    from tqdm.auto import tqdm

    from clipguide.scoring import clip_score

    prompts = read_prompt_file(args.prompts) if args.prompts else None
    paths = expand_paths(args.paths) if args.paths else [Path(p) for p in (prompts or {})]
    if not paths:
        raise SystemExit("clipguide score: no images found in PATHS")
    out = Path(args.out)
    fmt = _format(out, args.format)
    fields = FIELDS + (ROBUST_FIELDS if args.robust else ())
    if not args.resume and (out.exists() or _journal(out).exists()):
        if not args.overwrite:
            raise SystemExit(
                f"clipguide score: {out} exists; pass --resume to continue it or --overwrite"
            )
        out.unlink(missing_ok=True)
        _journal(out).unlink(missing_ok=True)
    first: dict[str, Path] = {}
    for path in paths:  # the same file named twice is scored once
        first.setdefault(_key(path), path)
    paths = list(first.values())
    done = read_rows(out, fmt) if args.resume else []
    done_keys = {_key(row["path"]) for row in done}
    todo = [p for p in paths if _key(p) not in done_keys]
    scorer = _load_scorer(args, args.batch_size) if todo else None
    writer = ResultWriter(out, fmt, done, fields, args.checkpoint_seconds)
    bar = tqdm(
        total=len(paths), initial=len(paths) - len(todo), unit="img", disable=args.no_progress
    )
    errors = 0
    try:
        for batch in _loaded_batches(todo, args.batch_size, args.workers):
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
                    row["cosine"] = _round(cos[j])
                    row["clipscore"] = _round(clip_score(cos[j], scorer.scale))
                    if robust is not None:
                        for field, view in zip(
                            ROBUST_FIELDS, ("jpeg", "crop", "grayscale"), strict=True
                        ):
                            row[field] = _round(getattr(robust, view)[j])
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


def run_rerank(args: argparse.Namespace) -> int:
    """Rank the images of a folder against one prompt and draw a contact sheet."""
    import torch

    from clipguide.scoring import clip_score, rank
    from clipguide.sheet import contact_sheet

    paths = expand_paths([args.dir])
    scorer = _load_scorer(args, args.batch_size)
    kept: list[tuple[Path, Any]] = []  # (path, thumbnail): full images are not kept
    cosines = []
    for batch in _loaded_batches(paths, args.batch_size, args.workers):
        good = [(path, image) for path, image, error in batch if not error]
        for path, _, error in batch:
            if error:
                logger.warning("skipping %s: %s", path, error)
        if good:
            cosines.append(scorer.cosine([image for _, image in good], args.prompt))
            for path, image in good:
                image.thumbnail((args.thumb, args.thumb))
                kept.append((path, image))
    if not kept:
        raise SystemExit(f"clipguide rerank: no readable images in {args.dir}")
    ranking = rank(clip_score(torch.cat(cosines), scorer.scale))
    top = ranking.indices[: args.top] if args.top else ranking.indices
    scores = [float(s) for s in ranking.scores[: len(top)]]
    for place, (i, score) in enumerate(zip(top, scores, strict=True), 1):
        print(f"{place}\t{score:.2f}\t{kept[i][0]}")
    captions = [f"#{place}  {score:.2f}" for place, score in enumerate(scores, 1)]
    sheet = contact_sheet([kept[i][1] for i in top], captions, thumb=args.thumb)
    Path(args.sheet).parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.sheet)
    logger.info("wrote contact sheet of %d images to %s", len(top), args.sheet)
    return 0


# -- parsers ---------------------------------------------------------------------------------
def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return number


def _model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        help=f"CLIP to judge with: open_clip name, hf-hub:ID, local-dir:FOLDER, a transformers "
        f"folder (default: the shipped {DEFAULT_MODEL!r} model)",
    )
    parser.add_argument("--pretrained", help="open_clip pretrained tag or checkpoint for --model")
    parser.add_argument(
        "--device", default=None, help="torch device (default: cuda if available, else cpu)"
    )
    parser.add_argument("--dtype", choices=("fp32", "fp16", "bf16"), default=None)
    parser.add_argument("--batch-size", type=_positive, default=32, help="images per forward")
    parser.add_argument(
        "--hessel", action="store_true", help="scale 2.5 (Hessel et al.) instead of 100"
    )


def register(subparsers: Any) -> None:
    """Add the ``score`` and ``rerank`` subcommands."""
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
    score.add_argument("--workers", type=_positive, default=4, help="image-decoding threads")
    score.add_argument(
        "--checkpoint-seconds", type=float, default=30.0,
        help="how often the output file is rewritten whole (batches are journalled meanwhile)",
    )  # fmt: skip
    score.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    _model_args(score)
    score.set_defaults(func=run_score)

    rerank = subparsers.add_parser(
        "rerank", help="rank a folder against a prompt; contact sheet", description=run_rerank.__doc__,
        epilog=RERANK_EXAMPLE, formatter_class=fmt,
    )  # fmt: skip
    rerank.add_argument("dir", metavar="DIR", help="folder of images (searched recursively)")
    rerank.add_argument("--prompt", required=True, help="the prompt to rank against")
    rerank.add_argument(
        "--top", type=_positive, default=None, help="keep the K best (default: all)"
    )
    rerank.add_argument(
        "--sheet", default="sheet.png", help="contact sheet to write (default: sheet.png)"
    )
    rerank.add_argument("--thumb", type=_positive, default=192, help="thumbnail size in pixels")
    rerank.add_argument("--workers", type=_positive, default=4, help="image-decoding threads")
    _model_args(rerank)
    rerank.set_defaults(func=run_rerank)
