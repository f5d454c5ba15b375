"""Contact sheets: a grid of thumbnails with a caption (rank, score) under each, and optionally
each image's layout boxes drawn on it."""

from __future__ import annotations

import math
from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont, ImageOps

from clipguide.model.images import to_rgb

__all__ = ["BOX_COLOURS", "contact_sheet"]

BOX_COLOURS = ((230, 25, 75), (0, 130, 200), (60, 180, 75), (245, 130, 48), (145, 30, 180))
"""Outline colours of a thumbnail's boxes, in box order."""
Box = tuple[float, float, float, float]


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: fixed-size bitmap font
        return ImageFont.load_default()


def contact_sheet(
    images: Sequence[Image.Image],
    captions: Sequence[str],
    *,
    thumb: int = 192,
    columns: int | None = None,
    padding: int = 6,
    font_size: int = 14,
    boxes: Sequence[Sequence[Box] | None] | None = None,
) -> Image.Image:
    """Lay images out row by row in the given order, each scaled to fit a ``thumb`` square.

    Args:
        images: PIL images of any mode and size.
        captions: one line of text per image, drawn in a band under its thumbnail.
        columns: images per row (default: about the square root of the count).
        boxes: per image, ``(x0, y0, x1, y1)`` boxes in fractions of the image (top-left
            origin) outlined on its thumbnail, or None for none.
    """
    if len(images) != len(captions):
        raise ValueError(f"captions must match images: got {len(captions)} for {len(images)}")
    if not images:
        raise ValueError("images is empty; a contact sheet needs at least one image")
    if thumb < 8:
        raise ValueError(f"thumb must be at least 8 pixels, got {thumb}")
    boxes = _check_boxes(boxes, len(images))
    columns = columns or math.ceil(math.sqrt(len(images)))
    if columns < 1:
        raise ValueError(f"columns must be a positive int, got {columns}")
    rows = math.ceil(len(images) / columns)
    font = _font(font_size)
    band = font_size + 2 * padding
    cell_w, cell_h = thumb + padding, thumb + band + padding
    sheet = Image.new("RGB", (columns * cell_w + padding, rows * cell_h + padding), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (image, caption) in enumerate(zip(images, captions, strict=True)):
        x = padding + (i % columns) * cell_w
        y = padding + (i // columns) * cell_h
        small = ImageOps.contain(to_rgb(image), (thumb, thumb), Image.BICUBIC)
        draw.rectangle((x, y, x + thumb - 1, y + thumb - 1), fill=(224, 224, 224))
        left, top = x + (thumb - small.width) // 2, y + (thumb - small.height) // 2
        sheet.paste(small, (left, top))
        for k, (x0, y0, x1, y1) in enumerate(boxes[i] or ()):
            outline = (
                left + round(x0 * small.width),
                top + round(y0 * small.height),
                left + max(round(x1 * small.width) - 1, round(x0 * small.width)),
                top + max(round(y1 * small.height) - 1, round(y0 * small.height)),
            )
            width = max(1, thumb // 96)
            draw.rectangle(outline, outline=BOX_COLOURS[k % len(BOX_COLOURS)], width=width)
        draw.rectangle((x, y + thumb, x + thumb - 1, y + thumb + band - 1), fill=(32, 32, 32))
        draw.text((x + padding, y + thumb + padding), caption, fill="white", font=font)
    return sheet


def _check_boxes(boxes: object, count: int) -> list:
    """``boxes`` as one entry per image, each box four fractions in [0, 1], x0 < x1, y0 < y1."""
    if boxes is None:
        return [None] * count
    boxes = list(boxes)  # type: ignore[call-overload]
    if len(boxes) != count:
        raise ValueError(f"boxes must match images: got {len(boxes)} for {count}")
    for i, per_image in enumerate(boxes):
        for box in per_image or ():
            ok = len(box) == 4 and all(isinstance(v, (int, float)) for v in box)
            if not ok or not (0 <= box[0] < box[2] <= 1 and 0 <= box[1] < box[3] <= 1):
                raise ValueError(
                    f"boxes[{i}] has {box!r}; accepted: (x0, y0, x1, y1) fractions in [0, 1] "
                    "with x0 < x1 and y0 < y1"
                )
    return boxes
