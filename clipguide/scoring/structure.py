"""Pure tensor maths of structure-aware selection: window views, where a phrase is found, and
whether relations and counts agree with the prompt.

CLIP reads a caption almost as a bag of words (Yuksekgonul et al., "When and why
vision-language models behave like bags-of-words", ICLR 2023): "a blue triangle and a cyan
square" and "a cyan triangle and a blue square" embed nearly alike, so no rewriting of the text
alone makes a plain score see a binding. What CLIP does read is one object phrase against an
image showing little else. So the image is cut into *window views* (the image with everything
outside one window filled with the median colour of its border, so objects keep their size and
place), each object phrase is scored against every window, and

- :func:`part_presence`: every phrase must be found somewhere (min over phrases of the best window);
- :func:`relation_agreement`: for "A left of B", the windows where A and B are found
  (softmax-weighted centres) must lie in that order along that axis;
- :func:`count_agreement`: the whole image must prefer the prompt to the same prompt with a
  number moved by one (a softmax over the captions);
- :func:`layout_agreement`: when the candidates were drawn on layouts (best-of-N across
  layouts), each box of a layout must show its own phrase rather than the layout's other
  phrases (or, with one phrase, rather than the empty background).

:mod:`clipguide.scoring.methods` combines them into the ``"structured"`` selection score.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from clipguide.checks import checked_box

__all__ = [
    "WINDOWS",
    "Box",
    "window_boxes",
    "window_views",
    "border_fill",
    "letterbox",
    "box_centres",
    "part_presence",
    "relation_axis",
    "relation_agreement",
    "count_agreement",
    "fraction_box",
    "layout_agreement",
]

Box = tuple[int, int, int, int]  # (top, left, height, width) in pixels

WINDOWS: tuple[tuple[float, float], ...] = ((0.5, 0.25), (0.625, 0.375))
"""Window layouts as (side, stride), fractions of the image side: 3x3 windows of half the
side plus 2x2 of 5/8 (chosen on the dev split)."""

_UP = ("above", "over", "on top of", "atop", "at the top of")
_DOWN = ("below", "under", "underneath", "beneath", "at the bottom of")


def window_boxes(
    height: int, width: int, layout: Sequence[tuple[float, float]] = WINDOWS
) -> list[Box]:
    """Every window of ``layout`` on a ``height`` x ``width`` image, row by row, as
    ``(top, left, h, w)`` pixels. Windows are placed in fractions of the side (the count
    depends only on ``layout``: ``floor((1 - side) / stride) + 1`` per axis), then rounded."""
    if height < 1 or width < 1:
        raise ValueError(f"height and width must be >= 1, got {height}x{width}")
    boxes = []
    for side, stride in layout:
        if not (0 < side <= 1 and 0 < stride <= 1):
            raise ValueError(
                f"layout entries must be (side, stride) in (0, 1], got {(side, stride)}"
            )
        steps = math.floor((1 - side) / stride + 1e-9) + 1
        h, w = max(1, round(side * height)), max(1, round(side * width))
        for i in range(steps):
            top = min(round(i * stride * height), height - h)
            for j in range(steps):
                boxes.append((top, min(round(j * stride * width), width - w), h, w))
    return boxes


def border_fill(image: torch.Tensor) -> torch.Tensor:
    """(C, 1, 1) per-channel median of a (C, H, W) image's one-pixel border."""
    if image.ndim != 3:
        raise ValueError(f"image must be (C, H, W), got shape {tuple(image.shape)}")
    c = image.shape[0]
    border = torch.cat([image[:, 0], image[:, -1], image[:, :, 0], image[:, :, -1]], dim=1)
    return border.reshape(c, -1).median(dim=1).values.view(c, 1, 1)


def letterbox(images: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
    """(..., C, S, S) square copies of (..., C, H, W) images, S = max(H, W): each image
    centred, the margins filled with ``fill`` (C, 1, 1). A square image is returned as is.

    A CLIP's preprocessing centre-crops to a square, so a 1344x768 image loses 21 % of its
    width on each side; letterboxed, it is seen whole (smaller)."""
    h, w = images.shape[-2:]
    if h == w:
        return images
    side = max(h, w)
    top, left = (side - h) // 2, (side - w) // 2
    out = fill.to(images).expand(*images.shape[:-2], side, side).clone()
    out[..., top : top + h, left : left + w] = images
    return out


def window_views(image: torch.Tensor, boxes: Sequence[Box]) -> torch.Tensor:
    """(len(boxes), C, H, W) copies of a (C, H, W) image, each keeping one box; everything
    else is filled with the per-channel median of the image's one-pixel border
    (:func:`border_fill`)."""
    fill = border_fill(image)
    views = fill.expand(len(boxes), *image.shape).clone()
    for k, (top, left, h, w) in enumerate(boxes):
        views[k, :, top : top + h, left : left + w] = image[:, top : top + h, left : left + w]
    return views


def box_centres(boxes: Sequence[Box], height: int, width: int) -> torch.Tensor:
    """(len(boxes), 2) centres ``(x, y)`` as fractions of the image's width and height."""
    return torch.tensor(
        [[(left + w / 2) / width, (top + h / 2) / height] for top, left, h, w in boxes],
        dtype=torch.float32,
    )


def part_presence(window_sims: torch.Tensor) -> torch.Tensor:
    """(N, windows, K) cosines of K phrases -> (N,): the least-found phrase's best window."""
    if window_sims.ndim != 3:
        raise ValueError(f"window_sims must be (N, windows, K), got {tuple(window_sims.shape)}")
    return window_sims.amax(dim=1).amin(dim=1)


def relation_axis(relation: str) -> tuple[int, float] | None:
    """``(axis, sign)`` of a spatial relation in the image (axis 0 = x, 1 = y, growing
    rightwards and downwards): subject minus object along the axis should have that sign.
    None for relations without an image axis ("next to", "behind", "in")."""
    low = " ".join(relation.lower().split())
    words = low.split()
    if "left" in words:
        return 0, -1.0
    if "right" in words:
        return 0, 1.0
    if low in _UP:
        return 1, -1.0
    if low in _DOWN:
        return 1, 1.0
    return None


def relation_agreement(
    subject: torch.Tensor,
    obj: torch.Tensor,
    centres: torch.Tensor,
    relation: str,
    *,
    tau: float = 0.03,
    scale: float = 0.125,
) -> torch.Tensor:
    """How well (N, windows) cosines of a subject and an object phrase agree with ``relation``.

    Each phrase is placed at the softmax(cosine / ``tau``)-weighted centre of the windows
    (``centres`` from :func:`box_centres`); the signed offset along the relation's axis, in
    image fractions, gives ``tanh(offset / scale)``: +1 clearly in order, -1 clearly reversed.
    Relations without an axis give 0.
    """
    found = relation_axis(relation)
    if found is None:
        return torch.zeros(subject.shape[0], dtype=subject.dtype, device=subject.device)
    axis, sign = found
    centres = centres.to(subject)
    where_s = torch.softmax(subject / tau, dim=1) @ centres
    where_o = torch.softmax(obj / tau, dim=1) @ centres
    return torch.tanh(sign * (where_s[:, axis] - where_o[:, axis]) / scale)


def count_agreement(
    image_embeds: torch.Tensor,
    prompt_embed: torch.Tensor,
    variant_embeds: torch.Tensor,
    logit_scale: float,
) -> torch.Tensor:
    """(N,) log-probability of the prompt in a softmax over the prompt and (J, D) captions
    that change one of its numbers, for (N, D) normalised image embeddings."""
    texts = torch.cat([prompt_embed.reshape(1, -1), variant_embeds], dim=0).to(image_embeds)
    return torch.log_softmax(logit_scale * image_embeds @ texts.T, dim=1)[:, 0]


def fraction_box(box: Sequence[float], height: int, width: int) -> Box:
    """Pixels ``(top, left, h, w)`` of an ``(x0, y0, x1, y1)`` box in fractions of a
    ``height`` x ``width`` image, at least one pixel each way."""
    x0, y0, x1, y1 = checked_box(box)
    top, left = min(round(y0 * height), height - 1), min(round(x0 * width), width - 1)
    h = max(1, min(round(y1 * height), height) - top)
    w = max(1, min(round(x1 * width), width) - left)
    return top, left, h, w


def layout_agreement(
    region_sims: torch.Tensor, blank_sims: torch.Tensor, columns: Sequence[int]
) -> torch.Tensor:
    """How well N images follow one layout: (N,) the least margin over its R boxes.

    ``region_sims`` (N, R, K) are cosines of each box's window view with the layout's K
    distinct phrases, ``blank_sims`` (N, K) those of the empty view (the border colour
    everywhere), ``columns[r]`` the phrase of box r. A box's margin is its own phrase's
    cosine minus the best other phrase's, or minus the empty view's when the layout has one
    phrase (a count: "three squares")."""
    if region_sims.ndim != 3:
        raise ValueError(f"region_sims must be (N, R, K), got {tuple(region_sims.shape)}")
    n, r, k = region_sims.shape
    if len(columns) != r or any(not 0 <= c < k for c in columns):
        raise ValueError(
            f"columns must give each of the {r} boxes a phrase in [0, {k}), got {list(columns)}"
        )
    if tuple(blank_sims.shape) != (n, k):
        raise ValueError(f"blank_sims must be ({n}, {k}), got {tuple(blank_sims.shape)}")
    margins = []
    for box, col in enumerate(columns):
        own = region_sims[:, box, col]
        if k == 1:
            margins.append(own - blank_sims[:, col])
        else:
            others = torch.cat([region_sims[:, box, :col], region_sims[:, box, col + 1 :]], dim=1)
            margins.append(own - others.amax(dim=1))
    return torch.stack(margins, dim=1).amin(dim=1)
