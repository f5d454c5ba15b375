"""A programmatic judge of micro-world images: finds the shapes and checks captions (no CLIP).

Pixels are explained as a mix of the background and one palette colour (distance to the
segment background -> colour), grouped into 8-connected components per colour, and each
component is described by its soft coverage: extent -> size; centre of mass below the box
centre -> triangle; else area / box area -> square (~1.0) or circle (~0.79).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .scenes import COLOURS, Prompt, ShapeObject, parse_prompt, relation_holds

__all__ = ["Detection", "Verdict", "check", "detect", "image_array"]

_PALETTE = np.array(list(COLOURS.values()), dtype=np.float32)  # (K, 3)
_NAMES = list(COLOURS)
_SIZE_THRESHOLD = 16.0  # extent in pixels between small (10-13) and large (19-24)
_MIN_AREA = 14.0
_MAX_RESIDUAL = 60.0


@dataclass(frozen=True)
class Detection(ShapeObject):
    """A detected shape plus the measurements it was classified from."""

    area: float = 0.0
    fill: float = 0.0
    skew: float = 0.0


@dataclass(frozen=True)
class Verdict:
    """Per-requirement results for a prompt and whether all hold."""

    prompt: str
    requirements: tuple[tuple[str, bool], ...]
    objects: tuple[Detection, ...]

    @property
    def ok(self) -> bool:
        return all(ok for _, ok in self.requirements)


def image_array(image) -> np.ndarray:
    """PIL image, uint8 HWC array, or float tensor/array CHW in [0, 1] -> float32 HWC 0..255."""
    if hasattr(image, "convert"):
        return np.asarray(image.convert("RGB"), dtype=np.float32)
    if hasattr(image, "detach"):
        image = image.detach().float().cpu().numpy()
    arr = np.asarray(image)
    if arr.ndim != 3:
        raise ValueError(f"image must be one HWC or CHW image, got shape {arr.shape}")
    if arr.shape[0] == 3 and arr.shape[-1] != 3:
        arr = arr.transpose(1, 2, 0)
    if arr.shape[-1] != 3:
        raise ValueError(f"image must have 3 channels, got shape {arr.shape}")
    if arr.dtype == np.uint8:
        return arr.astype(np.float32)
    return np.clip(arr.astype(np.float32), 0.0, 1.0) * 255.0


def _background(arr: np.ndarray) -> np.ndarray:
    border = np.concatenate([arr[0], arr[-1], arr[:, 0], arr[:, -1]])
    return np.median(border, axis=0)


def _classify_pixels(arr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per pixel: palette index (-1 = background) and coverage alpha (H, W, K) per colour."""
    bg = _background(arr)
    d = arr - bg  # (H, W, 3)
    direction = _PALETTE - bg  # (K, 3)
    alpha = np.clip((d @ direction.T) / (direction**2).sum(1), 0.0, 1.0)  # (H, W, K)
    resid = np.linalg.norm(d[..., None, :] - alpha[..., None] * direction, axis=-1)
    best = resid.argmin(-1)
    a = np.take_along_axis(alpha, best[..., None], -1)[..., 0]
    r = np.take_along_axis(resid, best[..., None], -1)[..., 0]
    label = np.where((a > 0.5) & (r < _MAX_RESIDUAL), best, -1)
    alpha = np.where(resid < _MAX_RESIDUAL, alpha, 0.0)
    return label, alpha


def _dilate(mask: np.ndarray) -> np.ndarray:
    p = np.pad(mask, 1)
    h, w = mask.shape
    return np.any([p[dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3)], axis=0)


def _components(label: np.ndarray) -> np.ndarray:
    """8-connected components of equal non-negative labels (-1 = none), by min propagation."""
    h, w = label.shape
    big = h * w
    comp = np.where(label >= 0, np.arange(big).reshape(h, w), big)
    padded_lab = np.pad(label, 1, constant_values=-1)
    shifts = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx]
    same = [
        (padded_lab[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w] == label) & (label >= 0)
        for dy, dx in shifts
    ]
    while True:
        padded = np.pad(comp, 1, constant_values=big)
        new = comp.copy()
        for (dy, dx), m in zip(shifts, same, strict=True):
            nb = padded[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]
            new = np.where(m, np.minimum(new, nb), new)
        if np.array_equal(new, comp):
            return np.where(label >= 0, comp, -1)
        comp = new


def _shape_of(fill: float, skew: float) -> str:
    if skew > 0.075:  # mass well below the box centre: an upright triangle
        return "triangle"
    if fill > 0.885:
        return "square"
    if fill > 0.64:
        return "circle"
    return "triangle"


def detect(image) -> list[Detection]:
    """The shapes in an image, left to right then top to bottom."""
    arr = image_array(image)
    label, alpha = _classify_pixels(arr)
    comp = _components(label)
    found = []
    for cid in np.unique(comp[comp >= 0]):
        mask = comp == cid
        ys, xs = np.nonzero(mask)
        k = int(label[ys[0], xs[0]])
        # soft coverage around the component: sub-pixel area and extents
        cover = alpha[..., k] * _dilate(mask)
        area = float(cover.sum())
        if area < _MIN_AREA:
            continue
        w, h = float(cover.max(0).sum()), float(cover.max(1).sum())
        fill = area / (w * h)
        extent = max(w, h)
        rows, prof, yy = cover.sum(1), cover.max(1), np.arange(cover.shape[0])
        skew = float((rows @ yy) / rows.sum() - (prof @ yy) / prof.sum()) / h
        x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
        found.append(
            Detection(
                shape=_shape_of(fill, skew),
                colour=_NAMES[k],
                size="large" if extent > _SIZE_THRESHOLD else "small",
                cx=float(x0 + x1) / 2,
                cy=float(y0 + y1) / 2,
                extent=extent,
                area=area,
                fill=fill,
                skew=skew,
            )
        )
    return sorted(found, key=lambda o: (o.cx, o.cy))


def check(image, prompt: str | Prompt) -> Verdict:
    """Whether the image shows what the caption asks: one requirement per group (+ relation).

    "a X" needs at least one match, a number needs exactly that many; a relation must hold
    between every matching pair (first group REL second group).
    """
    parsed = parse_prompt(prompt) if isinstance(prompt, str) else prompt
    objects = detect(image)
    reqs = []
    matches = []
    for g in parsed.groups:
        m = [o for o in objects if g.matches(o)]
        matches.append(m)
        ok = len(m) == g.count if g.exact else len(m) >= g.count
        reqs.append((f"{g.text()} (found {len(m)})", ok))
    if parsed.relation is not None:
        a, b = matches
        ok = bool(a and b) and all(relation_holds(p, q, parsed.relation) for p in a for q in b)
        reqs.append((f"{parsed.groups[0].shape} {parsed.relation} {parsed.groups[1].shape}", ok))
    return Verdict(parsed.text(), tuple(reqs), tuple(objects))
