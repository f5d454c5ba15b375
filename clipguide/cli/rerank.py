"""``clipguide rerank``: rank a folder of images against one prompt and draw a contact sheet.

The judge and its options are ``clipguide score``'s (bigG by default, ``--model shapes`` for the
micro world); ``DIR``, ``--sheet``'s format and folder are checked before the model loads.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from clipguide.cli.args import CLIError, check_writable_file, positive_int
from clipguide.cli.files import atomic_open
from clipguide.cli.score import load_scorer, loaded_batches, model_args
from clipguide.cli.score_files import IMAGE_EXTENSIONS, expand_paths
from clipguide.scoring.method_names import METHODS

__all__ = ["register", "run_rerank", "MAX_THUMB"]

logger = logging.getLogger(__name__)

RERANK_EXAMPLE = """example:
  clipguide rerank outputs/ --prompt "a green triangle" --top 16 --sheet best.png --model shapes"""


MAX_THUMB = 1024


def _thumb(value: str) -> int:
    """A thumbnail side in [8, MAX_THUMB] pixels (what ``contact_sheet`` draws legibly)."""
    number = positive_int(value)
    if not 8 <= number <= MAX_THUMB:
        raise argparse.ArgumentTypeError(f"expected 8 to {MAX_THUMB} pixels, got {value!r}")
    return number


def _sheet_format(sheet: Path) -> str:
    """The Pillow format ``--sheet``'s suffix asks for, checked before any scoring."""
    from PIL import Image

    Image.init()
    fmt = Image.registered_extensions().get(sheet.suffix.lower())
    if fmt is None or fmt not in Image.SAVE:
        common = [e for e in (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".gif")
                  if Image.registered_extensions().get(e) in Image.SAVE]  # fmt: skip
        raise CLIError(
            f"--sheet {sheet}: cannot write {sheet.suffix or 'files without a suffix'!r}; "
            f"accepted: {', '.join(common)}"
        )
    check_writable_file(sheet, "--sheet")
    return fmt


def run_rerank(args: argparse.Namespace) -> int:
    """Rank the images of a folder against one prompt and draw a contact sheet."""
    import torch

    from clipguide.scoring import clip_score, rank
    from clipguide.scoring.sheet import contact_sheet

    sheet_path = Path(args.sheet)
    sheet_format = _sheet_format(sheet_path)
    if not Path(args.dir).is_dir():
        raise CLIError(f"DIR {args.dir!r} is not a folder")
    paths = expand_paths([args.dir])
    if not paths:
        raise CLIError(f"DIR {args.dir!r} holds no image files ({', '.join(IMAGE_EXTENSIONS)})")
    scorer = load_scorer(args, args.batch_size)
    kept: list[tuple[Path, Any]] = []  # (path, thumbnail): full images are not kept
    scores_of = []  # per batch: CLIPScores, or the --method's scores (per image, any batch)
    for batch in loaded_batches(paths, args.batch_size, args.workers):
        good = [(path, image) for path, image, error in batch if not error]
        for path, _, error in batch:
            if error:
                logger.warning("skipping %s: %s", path, error)
        if good:
            images = [image for _, image in good]
            if args.method == "clipscore":
                cos = torch.nan_to_num(scorer.cosine(images, args.prompt), nan=-1.0)
                scores_of.append(clip_score(cos, scorer.scale))
            else:
                scores_of.append(scorer.select(images, args.prompt, args.method))
            for path, image in good:
                image.thumbnail((args.thumb, args.thumb))
                kept.append((path, image))
    if not kept:
        raise CLIError(f"no readable images in DIR {args.dir!r}", code=1)
    ranking = rank(torch.nan_to_num(torch.cat(scores_of), nan=-float("inf")))
    top = ranking.indices[: args.top] if args.top else ranking.indices
    scores = [float(s) for s in ranking.scores[: len(top)]]
    for place, (i, score) in enumerate(zip(top, scores, strict=True), 1):
        print(f"{place}\t{score:.2f}\t{kept[i][0]}")
    captions = [f"#{place}  {score:.2f}" for place, score in enumerate(scores, 1)]
    sheet = contact_sheet([kept[i][1] for i in top], captions, thumb=args.thumb)
    with atomic_open(sheet_path, "wb") as handle:
        sheet.save(handle, format=sheet_format)
    logger.info("wrote contact sheet of %d images to %s", len(top), sheet_path)
    return 0


def register(subparsers: Any) -> None:
    """Add the ``rerank`` subcommand."""
    fmt = argparse.RawDescriptionHelpFormatter
    rerank = subparsers.add_parser(
        "rerank", help="rank a folder against a prompt; contact sheet", description=run_rerank.__doc__,
        epilog=RERANK_EXAMPLE, formatter_class=fmt,
    )  # fmt: skip
    rerank.add_argument("dir", metavar="DIR", help="folder of images (searched recursively)")
    rerank.add_argument("--prompt", required=True, help="the prompt to rank against")
    rerank.add_argument(
        "--top", type=positive_int, default=None, help="keep the K best (default: all)"
    )
    rerank.add_argument(
        "--sheet", default="sheet.png", help="contact sheet to write (default: sheet.png)"
    )
    rerank.add_argument(
        "--thumb", type=_thumb, default=192, help=f"thumbnail size, 8..{MAX_THUMB} pixels"
    )
    rerank.add_argument("--workers", type=positive_int, default=4, help="image-decoding threads")
    rerank.add_argument(
        "--method", choices=METHODS, default="clipscore",
        help="how to rank: plain CLIPScore (default) or a selection method that sees "
        "attributes, counts and relations ('structured'; see README's selection section)",
    )  # fmt: skip
    model_args(rerank)
    rerank.set_defaults(func=run_rerank)
