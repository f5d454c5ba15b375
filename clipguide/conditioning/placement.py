"""Pure tensor maths of *placement*: moving each region's object into its box in the first steps.

Regions alone change *what* forms in a box, rarely *where*: the starting noise has already
decided where objects appear. Placement composes per-box latents into the model's prediction
(as layout-to-image methods such as LMD compose per-box latents): during the first steps the
predicted clean latents ``x0`` are pulled, inside a soft blob centred in each box, toward the
flat latent of that region's colour,

    x0' = x0 + strength * sum_r blob_r * (colour_r - x0),

and the model output is changed so that the scheduler steps with ``x0'`` (same latents, so the
implied noise moves by ``-alpha / sigma`` times the change). An object then starts where its box
is, in its colour; the regions' prompts decide its shape. A region's colour is the first colour
name in its prompt (CSS names, as PIL reads them), else the one it is given, else neutral grey.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from clipguide.checks import check, is_int

__all__ = ["NEUTRAL", "colour_in_text", "parse_colour", "blob_weights", "placement_delta"]

NEUTRAL: tuple[int, int, int] = (128, 128, 128)
"""The colour pulled toward in a region whose prompt names none."""


def parse_colour(value: Any, name: str = "colour") -> tuple[int, int, int]:
    """An RGB triple from a colour name (``"red"``, ``"#ff8800"``) or 3 ints in [0, 255]."""
    from PIL import ImageColor

    accepted = "a colour name such as 'red' or '#ff8800', or 3 ints (r, g, b) in [0, 255]"
    rgb = value
    if isinstance(value, str):
        try:
            rgb = ImageColor.getrgb(value.strip())[:3]
        except ValueError:
            rgb = None
    triple = isinstance(rgb, (tuple, list)) and len(rgb) == 3
    check(triple and all(is_int(v) and 0 <= v <= 255 for v in rgb), name, value, accepted)
    return (int(rgb[0]), int(rgb[1]), int(rgb[2]))


def colour_in_text(text: str) -> tuple[int, int, int] | None:
    """The first word of ``text`` that names a colour (CSS names), as RGB; None if none does."""
    from PIL import ImageColor

    for word in re.findall(r"[a-z]+", text.lower()):  # "(blue:1.2)" and "blue-green" too
        try:
            rgb = ImageColor.getrgb(word)
        except ValueError:
            continue
        return (int(rgb[0]), int(rgb[1]), int(rgb[2]))
    return None


def blob_weights(
    boxes: Sequence[tuple[float, float, float, float] | torch.Tensor],
    latent_hw: tuple[int, int],
    spread: float = 0.6,
) -> torch.Tensor:
    """(R, h, w) weights in [0, 1] on the latent grid: for a box ``(x0, y0, x1, y1)`` a
    Gaussian centred in it whose 1/e radii are ``spread / 2`` of its width and height; for an
    (H, W) mask, the mask resized to the grid by area."""
    h, w = int(latent_hw[0]), int(latent_hw[1])
    ys = (torch.arange(h, dtype=torch.float32) + 0.5) / h
    xs = (torch.arange(w, dtype=torch.float32) + 0.5) / w
    out = []
    for box in boxes:
        if isinstance(box, torch.Tensor):
            mask = box.detach().float().cpu()[None, None]
            out.append(F.interpolate(mask, size=(h, w), mode="area")[0, 0].clamp(0, 1))
            continue
        x0, y0, x1, y1 = box
        rx, ry = max((x1 - x0) * spread / 2, 1e-6), max((y1 - y0) * spread / 2, 1e-6)
        dx = (xs[None, :] - (x0 + x1) / 2) / rx
        dy = (ys[:, None] - (y0 + y1) / 2) / ry
        out.append(torch.exp(-(dx * dx + dy * dy)))
    if not out:
        return torch.zeros(0, h, w)
    return torch.stack(out)


def placement_delta(
    x0: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor, strength: float
) -> torch.Tensor:
    """Change of the (B, C, h, w) predicted clean latents ``x0`` toward the (R, C) flat
    ``targets`` inside the (R, h, w) ``weights``: ``strength * sum_r w_r (t_r - x0)``; where
    blobs overlap beyond a total weight of 1 they share it, so the change never overshoots."""
    w = weights.to(x0)
    total = w.sum(0, keepdim=True)
    w = w / total.clamp(min=1.0)
    t = targets.to(x0)
    pulled = torch.einsum("rhw,rc->chw", w, t)[None]  # sum_r w_r t_r
    return strength * (pulled - w.sum(0)[None, None] * x0)
