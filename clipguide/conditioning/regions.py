"""Regional prompts: regions of the image conditioned on their own prompts, on stock pipelines.

::

    rp = RegionalPrompt([Region("two red circles", box=(0, 0, 1, 0.5)),
                         Region("a blue square", box=(0, 0.5, 1, 1))], blend=0.3, stop=0.5)
    with rp.attach(pipe):
        image = pipe(prompt="two red circles above a blue square").images[0]

What happens: every cross-attention layer of the UNet also attends, for the conditional rows of
the batch, to each region's prompt (encoded with :func:`~clipguide.conditioning.encode_prompt`,
so weights and long prompts work per region), calling the attention processors already
installed. Inside a region its output replaces the whole prompt's, keeping ``blend`` of the
whole prompt's; outside every region the whole prompt conditions alone. The unconditional
(negative) rows, SDXL's pooled embeddings and added time ids stay the whole prompt's. Every
prompt and image of a batch gets the same regions. Maths and conventions (grids, box
rasterisation by area coverage, overlaps shared): :mod:`clipguide.conditioning.region_masks`.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Sequence
from typing import Any

import torch

from clipguide.checks import check, checked_box, describe, is_real
from clipguide.conditioning.placement import NEUTRAL, colour_in_text, parse_colour

__all__ = ["Region", "RegionalPrompt", "parse_region", "check_regions", "NAMED_BOXES"]

# Names accepted by parse_region in place of the four numbers.
NAMED_BOXES: dict[str, tuple[float, float, float, float]] = {
    "full": (0.0, 0.0, 1.0, 1.0),
    "left": (0.0, 0.0, 0.5, 1.0),
    "right": (0.5, 0.0, 1.0, 1.0),
    "top": (0.0, 0.0, 1.0, 0.5),
    "bottom": (0.0, 0.5, 1.0, 1.0),
    "top-left": (0.0, 0.0, 0.5, 0.5),
    "top-right": (0.5, 0.0, 1.0, 0.5),
    "bottom-left": (0.0, 0.5, 0.5, 1.0),
    "bottom-right": (0.5, 0.5, 1.0, 1.0),
}
_SYNTAX = (
    "'x0,y0,x1,y1:prompt' or 'x0,y0,x1,y1@weight:prompt' (fractions of the image, origin top-left)"
)


def check_window(start: Any, stop: Any) -> None:
    """``0 <= start < stop <= 1`` (fractions of the denoising run), named in the error."""
    check(is_real(start) and 0 <= start < 1, "start", start, "a number with 0 <= start < 1")
    check(
        is_real(stop) and start < stop <= 1,
        "stop",
        stop,
        f"a number with start ({start}) < stop <= 1",
    )


@dataclasses.dataclass(frozen=True, eq=False)
class Region:
    """A part of the image with its own prompt.

    Args:
        prompt: what to draw there (the weight syntax and long prompts of ``encode_prompt``).
        box: ``(x0, y0, x1, y1)`` in fractions of the image, origin top-left; or
        mask: an (H, W) tensor with values in [0, 1], any resolution. Exactly one of the two.
        weight: strength of the region's prompt inside it (1: replace the whole prompt's
            attention there, up to the blend; 0: none, leaving only placement; above 1
            extrapolates).
        start, stop: fractions of the denoising run during which the region acts; intersected
            with the :class:`RegionalPrompt`'s own window.
        colour: what placement (``RegionalPrompt(place=...)``) pulls the region toward: a
            colour name or (r, g, b); default the first colour named in ``prompt``, else grey.
    """

    prompt: str
    box: tuple[float, float, float, float] | None = None
    mask: torch.Tensor | None = None
    weight: float = 1.0
    start: float = 0.0
    stop: float = 1.0
    colour: str | tuple[int, int, int] | None = None

    def __post_init__(self) -> None:
        check(
            isinstance(self.prompt, str) and self.prompt.strip() != "",
            "prompt",
            self.prompt,
            "a non-empty string",
        )
        if (self.box is None) == (self.mask is None):
            raise ValueError(
                f"box={describe(self.box)} and mask={describe(self.mask)} are not valid together; "
                "accepted: exactly one of them (a box (x0, y0, x1, y1) or an (H, W) mask)"
            )
        if self.box is not None:
            object.__setattr__(self, "box", checked_box(self.box))
        else:
            _check_mask(self.mask)
        check(
            is_real(self.weight) and self.weight >= 0,
            "weight",
            self.weight,
            "a finite number >= 0",
        )
        check_window(self.start, self.stop)
        if self.colour is not None:
            parse_colour(self.colour)

    def placement_colour(self) -> tuple[int, int, int]:
        """RGB placement pulls toward: ``colour``, else the prompt's first colour, else grey."""
        if self.colour is not None:
            return parse_colour(self.colour)
        return colour_in_text(self.prompt) or NEUTRAL

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Region):
            return NotImplemented
        same_mask = (self.mask is None and other.mask is None) or (
            self.mask is not None
            and other.mask is not None
            and self.mask.shape == other.mask.shape
            and bool(torch.equal(self.mask.cpu(), other.mask.cpu()))
        )
        return same_mask and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def _key(self) -> tuple:
        return (self.prompt, self.box, self.weight, self.start, self.stop, self.colour)


def _check_mask(mask: Any) -> None:
    accepted = "an (H, W) tensor of values in [0, 1], not all zero"
    check(isinstance(mask, torch.Tensor) and mask.dim() == 2, "mask", mask, accepted)
    check(
        mask.numel() > 0 and (mask.is_floating_point() or mask.dtype == torch.bool),
        "mask",
        mask,
        accepted,
    )
    if mask.device.type == "meta":
        return
    values = mask.detach().float()
    check(bool(torch.isfinite(values).all()), "mask", mask, f"{accepted}, finite")
    check(bool(((values >= 0) & (values <= 1)).all()), "mask", mask, accepted)
    check(bool((values > 0).any()), "mask", mask, f"{accepted} (this one is empty)")


def _number(text: str, what: str, region: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise ValueError(
            f"region={region!r} is not valid: {what} {text.strip()!r} is not a number; "
            f"accepted: {_SYNTAX}, or a named box {sorted(NAMED_BOXES)} before the ':'"
        )
    return value


def parse_region(text: str) -> Region:
    """A :class:`Region` from the command-line form ``"x0,y0,x1,y1:prompt"``.

    ``"x0,y0,x1,y1@weight:prompt"`` sets the weight; a named box (``left``, ``right``, ``top``,
    ``bottom``, ``top-left``, ..., ``full``; see :data:`NAMED_BOXES`) may replace the numbers:
    ``"left@0.8:a red fox"``. The prompt is everything after the first ``:`` (so its own
    ``(word:1.3)`` weights are kept).
    """
    if not isinstance(text, str):
        raise TypeError(f"region={describe(text)} is not valid; accepted: a string {_SYNTAX}")
    head, sep, prompt = text.partition(":")
    if not sep:
        raise ValueError(
            f"region={text!r} is not valid: no ':' before the prompt; accepted: {_SYNTAX}"
        )
    where, _, weight_text = head.partition("@")
    weight = _number(weight_text, "weight", text) if weight_text.strip() else 1.0
    name = where.strip().lower()
    if name in NAMED_BOXES:
        box: Any = NAMED_BOXES[name]
    else:
        parts = re.split(r"[,\s]+", where.strip())
        if len(parts) != 4:
            raise ValueError(
                f"region={text!r} is not valid: {where.strip()!r} is not 4 numbers; accepted: "
                f"{_SYNTAX}, or a named box {sorted(NAMED_BOXES)} before the ':'"
            )
        box = tuple(_number(p, "box value", text) for p in parts)
    try:
        return Region(prompt.strip(), box=box, weight=weight)
    except ValueError as error:
        raise ValueError(f"region={text!r}: {error}") from error


def check_regions(regions: Any) -> tuple[Region, ...]:
    """Regions from a sequence of :class:`Region` or strings (:func:`parse_region`)."""
    if isinstance(regions, (str, Region)) or not isinstance(regions, Sequence):
        raise TypeError(
            f"regions={describe(regions)} is not valid; accepted: a list of Region objects or "
            f"strings {_SYNTAX}"
        )
    out = []
    for i, item in enumerate(regions):
        if isinstance(item, Region):
            out.append(item)
            continue
        if not isinstance(item, str):
            raise TypeError(
                f"regions[{i}]={describe(item)} is not valid; accepted: a Region or a string {_SYNTAX}"
            )
        try:
            out.append(parse_region(item))
        except ValueError as error:
            raise ValueError(f"regions[{i}]: {error}") from error
    return tuple(out)


class RegionalPrompt:
    """Regions to condition a pipeline on; ``with rp.attach(pipe): pipe(...)``.

    Args:
        regions: :class:`Region` objects or strings for :func:`parse_region`; an empty list
            leaves the pipeline's output unchanged.
        blend: share of the whole prompt's attention output kept inside each region, in [0, 1].
        start, stop: fractions of the denoising run during which regions act (each region's
            own window is intersected with this one).
        place: placement strength in [0, 1] (0: off): during the first ``place_stop`` of the
            run, the predicted image is pulled toward each region's colour in a soft blob
            centred in its box, so its object forms there (:mod:`~clipguide.conditioning.placement`).
        place_stop: fraction of the run during which placement acts.
    """

    def __init__(
        self,
        regions: Sequence[Region | str] = (),
        *,
        blend: float = 0.3,
        start: float = 0.0,
        stop: float = 1.0,
        place: float = 0.0,
        place_stop: float = 0.3,
    ) -> None:
        self._regions = check_regions(regions)
        check(is_real(blend) and 0 <= blend <= 1, "blend", blend, "a number in [0, 1]")
        check_window(start, stop)
        check(is_real(place) and 0 <= place <= 1, "place", place, "a number in [0, 1]")
        check(
            is_real(place_stop) and 0 < place_stop <= 1,
            "place_stop",
            place_stop,
            "a number in (0, 1]",
        )
        self._settings = (float(blend), float(start), float(stop))
        self._placement = (float(place), float(place_stop))
        self._attachment: Any = None

    # read-only: an attachment caches what they imply (masks, shares, windows)
    @property
    def regions(self) -> tuple[Region, ...]:
        return self._regions

    @property
    def blend(self) -> float:
        return self._settings[0]

    @property
    def start(self) -> float:
        return self._settings[1]

    @property
    def stop(self) -> float:
        return self._settings[2]

    @property
    def place(self) -> float:
        return self._placement[0]

    @property
    def place_stop(self) -> float:
        return self._placement[1]

    def __repr__(self) -> str:
        placed = f", place={self.place}, place_stop={self.place_stop}" if self.place else ""
        return (
            f"RegionalPrompt({len(self.regions)} regions, blend={self.blend}, "
            f"start={self.start}, stop={self.stop}{placed})"
        )

    def placing(self, position: int, total: int) -> bool:
        """Whether placement acts at model evaluation ``position`` of ``total``."""
        return bool(self.regions) and self.place > 0 and position / max(total, 1) < self.place_stop

    def window(self, index: int) -> tuple[float, float]:
        """Region ``index``'s (start, stop): its own window within the prompt's."""
        region = self.regions[index]
        return max(region.start, self.start), min(region.stop, self.stop)

    def active(self, position: int, total: int) -> list[int]:
        """Indices of the regions acting at model evaluation ``position`` of ``total``."""
        frac = position / max(total, 1)
        found = []
        for i in range(len(self.regions)):
            start, stop = self.window(i)
            if start <= frac < stop and self.regions[i].weight != 0:
                found.append(i)
        return found

    def attach(self, pipe: Any) -> Any:
        """Hook into a stock diffusers pipeline; ``with rp.attach(pipe): pipe(...)``.

        Encodes the region prompts now (errors come before any sampling). Returns the
        attachment, a context manager whose exit (or ``detach()``) restores the pipeline.
        """
        from clipguide.conditioning.region_attention import RegionAttachment

        if self._attachment is not None:
            raise RuntimeError(
                f"this RegionalPrompt is already attached to pipe="
                f"{type(self._attachment.pipe).__name__}; call detach() first"
            )
        self._attachment = RegionAttachment(self, pipe)
        return self._attachment

    def detach(self) -> None:
        """Remove every hook these regions installed (no-op when not attached)."""
        if self._attachment is not None:
            self._attachment.detach()
