"""``clipguide rerank``: rank a folder of images against one prompt; a contact sheet on request.

The judge and its options are ``clipguide score``'s (bigG by default, ``--model shapes`` for the
micro world); ``DIR``, ``--sheet``'s format and folder are checked before the model loads.
Standard output is a table (a header naming the method and its scale, then rank, score, path per
image); where the sheet went is one line on standard error, so the table can be redirected.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from clipguide.cli.args import CLIError, check_writable_file, positive_int
from clipguide.cli.files import atomic_open
from clipguide.cli.score import load_scorer, loaded_batches, model_args
from clipguide.cli.score_files import IMAGE_EXTENSIONS, expand_paths
from clipguide.scoring.method_names import METHODS

__all__ = ["register", "run_rerank", "score_header", "MAX_THUMB"]

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


def score_header(method: str, scale: float) -> str:
    """The table's header: what the score column holds, by ``method``, at ``scale``."""
    if method == "clipscore":
        what = f"clipscore (CLIPScore = {scale:g} * max(cos, 0))"
    else:
        what = f"{method} ({scale:g} * selection score; ranks these images, not a CLIPScore)"
    return f"rank\t{what}\tpath"


def run_rerank(args: argparse.Namespace) -> int:
    """Rank a folder's images against one prompt, best first (a contact sheet with --sheet)."""
    import torch
    from tqdm.auto import tqdm

    from clipguide.scoring import clip_score, rank
    from clipguide.scoring.sheet import contact_sheet

    sheet_path = None if args.sheet is None else Path(args.sheet)
    sheet_format = None if sheet_path is None else _sheet_format(sheet_path)
    if not Path(args.dir).is_dir():
        raise CLIError(f"DIR {args.dir!r} is not a folder")
    paths = expand_paths([args.dir])
    if not paths:
        raise CLIError(f"DIR {args.dir!r} holds no image files ({', '.join(IMAGE_EXTENSIONS)})")
    scorer = load_scorer(args, args.batch_size)
    kept: list[tuple[Path, Any]] = []  # (path, thumbnail or None): full images are not kept
    scores_of = []  # per batch: CLIPScores, or the --method's scores (per image, any batch)
    bar = tqdm(total=len(paths), unit="img", disable=args.no_progress)
    for batch in loaded_batches(paths, args.batch_size, args.workers):
        bar.update(len(batch))
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
                if sheet_path is not None:
                    image.thumbnail((args.thumb, args.thumb))
                kept.append((path, image if sheet_path is not None else None))
    bar.close()
    if not kept:
        raise CLIError(f"no readable images in DIR {args.dir!r}", code=1)
    ranking = rank(torch.nan_to_num(torch.cat(scores_of), nan=-float("inf")))
    top = ranking.indices[: args.top] if args.top else ranking.indices
    scores = [float(s) for s in ranking.scores[: len(top)]]
    print(score_header(args.method, scorer.scale))
    for place, (i, score) in enumerate(zip(top, scores, strict=True), 1):
        print(f"{place}\t{score:.2f}\t{kept[i][0]}")
    if sheet_path is not None:
        captions = [f"#{place}  {score:.2f}" for place, score in enumerate(scores, 1)]
        sheet = contact_sheet([kept[i][1] for i in top], captions, thumb=args.thumb)
        with atomic_open(sheet_path, "wb") as handle:
            sheet.save(handle, format=sheet_format)
        print(f"contact sheet of the {len(top)} best: {sheet_path}", file=sys.stderr)
    return 0


def register(subparsers: Any) -> None:
    """Add the ``rerank`` subcommand."""
    fmt = argparse.RawDescriptionHelpFormatter
    rerank = subparsers.add_parser(
        "rerank", help="rank a folder against a prompt (contact sheet with --sheet)",
        description=run_rerank.__doc__,
        epilog=RERANK_EXAMPLE, formatter_class=fmt,
    )  # fmt: skip
    rerank.add_argument("dir", metavar="DIR", help="folder of images (searched recursively)")
    rerank.add_argument("--prompt", required=True, help="the prompt to rank against")
    rerank.add_argument(
        "--top", type=positive_int, default=None, help="keep the K best (default: all)"
    )
    rerank.add_argument(
        "--sheet", default=None,
        help="also write a contact sheet of the ranked images here (.png, .jpg, .webp...); "
        "default: none",
    )  # fmt: skip
    rerank.add_argument(
        "--thumb", type=_thumb, default=192,
        help=f"--sheet's thumbnail size, 8..{MAX_THUMB} pixels (default 192)",
    )  # fmt: skip
    rerank.add_argument("--workers", type=positive_int, default=4, help="image-decoding threads")
    rerank.add_argument(
        "--method", choices=METHODS, default="clipscore",
        help="how to rank: plain CLIPScore (default) or a selection method that sees "
        "attributes, counts and relations ('structured'; see README's selection section)",
    )  # fmt: skip
    rerank.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    model_args(rerank)
    rerank.set_defaults(func=run_rerank)
