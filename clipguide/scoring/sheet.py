"""Contact sheets: a grid of thumbnails with a caption (rank, score) under each."""

from __future__ import annotations

import math
from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont, ImageOps

from clipguide.model.images import to_rgb

__all__ = ["contact_sheet"]


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
) -> Image.Image:
    """Lay images out row by row in the given order, each scaled to fit a ``thumb`` square.

    Args:
        images: PIL images of any mode and size.
        captions: one line of text per image, drawn in a band under its thumbnail.
        columns: images per row (default: about the square root of the count).
    """
    if len(images) != len(captions):
        raise ValueError(f"captions must match images: got {len(captions)} for {len(images)}")
    if not images:
        raise ValueError("images is empty; a contact sheet needs at least one image")
    if thumb < 8:
        raise ValueError(f"thumb must be at least 8 pixels, got {thumb}")
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
        sheet.paste(small, (x + (thumb - small.width) // 2, y + (thumb - small.height) // 2))
        draw.rectangle((x, y + thumb, x + thumb - 1, y + thumb + band - 1), fill=(32, 32, 32))
        draw.text((x + padding, y + thumb + padding), caption, fill="white", font=font)
    return sheet
