"""Drawing a scene: a 64x64 RGB image, anti-aliased, with mild colour variation."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from clipguide.shapes.grammar import COLOURS, SHAPES, SIZES
from clipguide.shapes.scenes import IMAGE_SIZE, Scene, ShapeObject, non_negative_int

__all__ = ["draw", "render"]

_SUPERSAMPLE = 4


def _check_scene(scene) -> None:
    """Raise naming the field of ``scene`` that render cannot draw."""
    if not isinstance(scene, Scene):
        raise TypeError(f"scene must be a Scene, got {scene!r} ({type(scene).__name__})")
    non_negative_int("scene.seed", scene.seed)
    for i, o in enumerate(scene.objects):
        for field_name, value, accepted in (
            ("shape", o.shape, SHAPES),
            ("colour", o.colour, tuple(COLOURS)),
            ("size", o.size, SIZES),
        ):
            if value not in accepted:
                raise ValueError(
                    f"scene.objects[{i}].{field_name}={value!r} is not one of {accepted}"
                )


def render(scene: Scene, *, jitter: bool = True) -> Image.Image:
    """Draw the scene as a 64x64 RGB image (anti-aliased, mild colour variation)."""
    _check_scene(scene)
    rng = np.random.default_rng([scene.seed, 104729])
    s = _SUPERSAMPLE
    img = Image.new("RGB", (IMAGE_SIZE * s, IMAGE_SIZE * s), scene.background)
    draw = ImageDraw.Draw(img)
    for o in scene.objects:
        base = np.array(COLOURS[o.colour])
        if jitter:
            base = base + rng.integers(-10, 11, size=3)
        fill = tuple(int(v) for v in np.clip(base, 0, 255))
        h = o.extent / 2
        x0, y0, x1, y1 = ((o.cx - h) * s, (o.cy - h) * s, (o.cx + h) * s, (o.cy + h) * s)
        if o.shape == "circle":
            draw.ellipse((x0, y0, x1, y1), fill=fill)
        elif o.shape == "square":
            draw.rectangle((x0, y0, x1, y1), fill=fill)
        else:
            draw.polygon([((x0 + x1) / 2, y0), (x1, y1), (x0, y1)], fill=fill)
    img = img.resize((IMAGE_SIZE, IMAGE_SIZE), Image.BOX)
    if jitter:
        arr = np.asarray(img).astype(np.float32) + rng.normal(0, 1.5, (IMAGE_SIZE, IMAGE_SIZE, 3))
        img = Image.fromarray(np.clip(arr, 0, 255).round().astype(np.uint8))
    return img


def draw(*objects: tuple[str, str, float, float], extent: float = 20.0) -> Image.Image:
    """Large shapes ``(shape, colour, cx, cy)`` (centres in pixels) drawn exactly, without
    jitter: a hand-made scene for tests and examples."""
    shapes = tuple(ShapeObject(s, c, "large", x, y, extent) for s, c, x, y in objects)
    return render(Scene("", "hand-made", shapes), jitter=False)
