"""``--region`` and ``--layout`` for ``clipguide generate``: boxes of the image with their own
prompts, given on the command line or read from the prompt.

- ``--region "x0,y0,x1,y1:a red fox"`` (repeatable; fractions of the image, origin top-left;
  ``left``, ``top-right``... name common boxes; ``x0,y0,x1,y1@1.5:prompt`` sets a weight):
  every image is sampled under these regions; overlapping boxes share their overlap.
- ``--region-place F`` pulls each ``--region`` box's object into it during the first steps
  (placement, ``RegionalPrompt(place=F)``; its colour is the first one its prompt names).
- ``--layout auto``: candidates are spread over the layouts read from the prompt
  (:func:`~clipguide.conditioning.layouts.layouts_from_prompt`) where the dev-chosen policy
  uses them (:data:`~clipguide.conditioning.layout_policy.DEFAULT_POLICY`); ``--layout
  none``: plain sampling. Explicit regions replace the automatic layout: passing both
  ``--region`` and ``--layout auto`` is refused.

Every check here runs before any model loads.
"""

from __future__ import annotations

import argparse
import contextlib
from typing import Any

from clipguide.cli.args import CLIError

__all__ = [
    "LAYOUT_CHOICES",
    "add_region_options",
    "check_region_args",
    "layout_record",
    "region_arg",
    "regions_attached",
]

LAYOUT_CHOICES = ("auto", "none")


def region_arg(text: str):
    """One ``--region`` value as a :class:`~clipguide.conditioning.regions.Region`."""
    from clipguide.conditioning.regions import parse_region

    try:
        return parse_region(text)
    except (ValueError, TypeError) as err:
        raise argparse.ArgumentTypeError(f"{text!r} is not a region: {err}") from None


def add_region_options(p: argparse.ArgumentParser) -> None:
    """Add ``--region``, ``--region-blend``, ``--region-place`` and ``--layout`` to a parser."""
    p.add_argument(
        "--region",
        action="append",
        type=region_arg,
        default=None,
        metavar="X0,Y0,X1,Y1:PROMPT",
        help="a box of the image (fractions, origin top-left; or left, right, top, bottom, "
        'top-left, ...) drawn from its own prompt, e.g. "0,0,0.5,1:a red fox"; repeatable',
    )
    p.add_argument(
        "--region-blend",
        type=float,
        default=0.3,
        metavar="F",
        help="share of the whole prompt kept inside each --region box, 0..1 (default 0.3)",
    )
    p.add_argument(
        "--region-place",
        type=float,
        default=0.0,
        metavar="F",
        help="pull each --region box's object into the box during the first steps, in the "
        "colour its prompt names, 0..1 (default 0: off; layouts read from the prompt use 0.9)",
    )
    p.add_argument(
        "--layout",
        choices=LAYOUT_CHOICES,
        default=None,
        help="auto: spread --best-of candidates over layouts read from the prompt (where "
        "they help); none: plain sampling (default: the model's; none with --region)",
    )


def check_region_args(args: argparse.Namespace, default_layout: str = "none") -> None:
    """Refuse what cannot combine; fill in ``--layout``'s default (``default_layout``, or
    none when explicit regions are given)."""
    if args.region and args.layout == "auto":
        raise CLIError(
            f"--region {len(args.region)} box(es) and --layout auto cannot be combined: "
            "explicit regions replace the layout read from the prompt; drop --layout auto or "
            "the --region options"
        )
    blend = args.region_blend
    if not (isinstance(blend, (int, float)) and 0 <= blend <= 1):
        raise CLIError(f"--region-blend {blend!r} is not valid; accepted: a number in [0, 1]")
    place = args.region_place
    if not (isinstance(place, (int, float)) and 0 <= place <= 1):
        raise CLIError(f"--region-place {place!r} is not valid; accepted: a number in [0, 1]")
    if args.layout is None:
        args.layout = "none" if args.region else default_layout


def regions_attached(pipe: Any, args: argparse.Namespace) -> Any:
    """The explicit ``--region`` boxes attached to ``pipe`` (their prompts encoded now, so
    errors come before sampling), or nothing."""
    if not args.region:
        return contextlib.nullcontext()
    from clipguide.conditioning.regions import RegionalPrompt

    try:
        return RegionalPrompt(args.region, blend=args.region_blend, place=args.region_place).attach(
            pipe
        )
    except (ValueError, TypeError) as err:
        raise CLIError(f"--region: {err}", code=2) from err


def layout_record(candidate: Any) -> dict | None:
    """A candidate's layout for the sidecar (None for a plain one)."""
    layout = getattr(candidate, "layout", None)
    if layout is None:
        return None
    use = candidate.use
    return {
        "name": layout.name,
        "kind": layout.kind,
        "regions": [{"prompt": r.prompt, "box": list(r.box)} for r in layout.regions],
        "blend": use.blend,
        "start": use.start,
        "stop": use.stop,
        "weight": use.weight,
        "place": use.place,
        "place_stop": use.place_stop,
    }
