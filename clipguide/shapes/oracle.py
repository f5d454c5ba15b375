"""A programmatic judge of micro-world images: finds the shapes and checks captions (no CLIP).

Pixels are explained as a mix of the background and one palette colour (distance to the
segment background -> colour) and grouped into 8-connected components per colour. Generated
images drift in colour inside one shape, so components are then merged: mixed pixels between
two colours go to the nearest component of their blob, and touching components join when one
is a fringe or sliver, or when together they form one square-ish, nearly convex blob (stricter
for colours far apart on the hue circle). A region's colour is its dominant one; flecks,
slivers and faint blobs are dropped. Each region is described by its soft coverage (distance
from the background, so a drifting hue still counts): extent -> size; centre of mass below the
box centre -> triangle; else area / box area -> square (~1.0) or circle (~0.79).
Measured against known scenes by ``benchmarks/oracle_agreement.py``.
"""

from __future__ import annotations

import colorsys
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull

from .grammar import COLOURS, Prompt, parse_caption
from .scenes import IMAGE_SIZE, ShapeObject, relation_holds

__all__ = ["Detection", "Verdict", "check", "detect", "image_array", "judge"]

_PALETTE = np.array(list(COLOURS.values()), dtype=np.float32)  # (K, 3)
_NAMES = list(COLOURS)
_SIZE_THRESHOLD = 16.0  # extent in pixels between small (10-13) and large (19-24)
_MIN_AREA = 14.0
_RANGE_SLACK = 0.01  # float images may overshoot [0, 1] by this much (decoder rounding)
_MAX_RESIDUAL = 60.0
_MIN_PIXELS = 12  # a touching colour patch smaller than this is a fringe
_SLIVER_THICKNESS = 3.0  # pixels per pixel of length below which a patch is a sliver
# A shape whose colour drifts merges only into one square-ish, nearly convex blob: looser
# between hue neighbours (red-yellow-green-cyan-blue-purple), stricter between far hues.
_MAX_ASPECT, _MIN_SOLIDITY = 1.5, 0.75
_MAX_ASPECT_FAR, _MIN_SOLIDITY_FAR = 1.3, 0.88
# A shape's coverage is mostly solid (>= _SOLID); a faint blob's is mostly partial.
_SOLID, _MIN_SOLID_SHARE = 0.8, 0.4
# Centre of mass below the box centre, in box heights: circles and squares reach ~0.04 when
# blurred or drifting, triangles ~0.1 (small ones on light colours down to ~0.06).
_TRIANGLE_SKEW = 0.055


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
    objects: tuple[ShapeObject, ...]

    @property
    def ok(self) -> bool:
        return all(ok for _, ok in self.requirements)

    def as_record(self) -> dict:
        """The verdict as plain JSON data (what ``clipguide generate`` writes in sidecars)."""
        return {
            "ok": self.ok,
            "requirements": [{"what": w, "ok": ok} for w, ok in self.requirements],
            "objects": [
                {
                    "shape": o.shape,
                    "colour": o.colour,
                    "size": o.size,
                    "centre": [round(o.cx, 1), round(o.cy, 1)],
                }
                for o in self.objects
            ],
        }


def image_array(image) -> np.ndarray:
    """One 64x64 micro-world image -> float32 HWC in 0..255.

    Accepted: a PIL image; a uint8 array/tensor (HWC or CHW, 0..255); a float array/tensor
    (HWC or CHW) in [0, 1], as diffusers' ``output_type="pt"``. The oracle's thresholds are in
    pixels of 64x64 images, so other sizes are refused rather than misread.
    """
    if hasattr(image, "convert"):
        arr = np.asarray(image.convert("RGB"), dtype=np.float32)
    else:
        arr = _as_hwc(image)
        if arr.dtype == np.uint8:
            arr = arr.astype(np.float32)
        elif np.issubdtype(arr.dtype, np.floating):
            arr = _unit_to_255(arr.astype(np.float32))
        else:
            raise TypeError(f"image must be uint8 (0..255) or float (0..1), got dtype {arr.dtype}")
    if arr.shape[:2] != (IMAGE_SIZE, IMAGE_SIZE):
        raise ValueError(
            f"image must be {IMAGE_SIZE}x{IMAGE_SIZE} (the micro world's size), got shape "
            f"{arr.shape}; resize it first"
        )
    return arr


def _as_hwc(image) -> np.ndarray:
    """An array or tensor of one RGB image, channels last (dtype kept)."""
    if hasattr(image, "detach"):
        image = image.detach().cpu()
        image = (image.float() if image.is_floating_point() else image).numpy()
    if not isinstance(image, np.ndarray):
        raise TypeError(
            f"image must be a PIL image, numpy array or torch tensor, got {type(image).__name__}"
        )
    if image.ndim != 3:
        raise ValueError(f"image must be one HWC or CHW image, got shape {image.shape}")
    if image.shape[0] == 3 and image.shape[-1] != 3:
        image = image.transpose(1, 2, 0)
    if image.shape[-1] != 3:
        raise ValueError(f"image must have 3 channels, got shape {image.shape}")
    return image


def _unit_to_255(arr: np.ndarray) -> np.ndarray:
    if not np.isfinite(arr).all():
        raise ValueError("image has NaN or infinite values; accepted: floats in [0, 1]")
    lo, hi = float(arr.min()), float(arr.max())
    if lo < -_RANGE_SLACK or hi > 1 + _RANGE_SLACK:
        raise ValueError(
            f"a float image must be in [0, 1], got values in [{lo:.3g}, {hi:.3g}]; "
            f"pass uint8 for 0..255, or map [-1, 1] with (x + 1) / 2"
        )
    return np.clip(arr, 0.0, 1.0) * 255.0


def _background(arr: np.ndarray) -> np.ndarray:
    border = np.concatenate([arr[0], arr[-1], arr[:, 0], arr[:, -1]])
    return np.median(border, axis=0)


@dataclass(frozen=True)
class _Pixels:
    """Per-pixel readings of an image against the palette."""

    label: np.ndarray  # (H, W) palette index of a pixel that is mostly one colour, else -1
    strength: np.ndarray  # (H, W, K) distance from the background relative to each colour's
    seam: np.ndarray  # (H, W) far from the background but on no colour's line: a mix of two


def _classify_pixels(arr: np.ndarray) -> _Pixels:
    """Explain each pixel as the background blended with one palette colour."""
    bg = _background(arr)
    d = arr - bg  # (H, W, 3)
    direction = _PALETTE - bg  # (K, 3)
    alpha = np.clip((d @ direction.T) / (direction**2).sum(1), 0.0, 1.0)  # (H, W, K)
    resid = np.linalg.norm(d[..., None, :] - alpha[..., None] * direction, axis=-1)
    best = resid.argmin(-1)
    a = np.take_along_axis(alpha, best[..., None], -1)[..., 0]
    r = np.take_along_axis(resid, best[..., None], -1)[..., 0]
    label = np.where((a > 0.5) & (r < _MAX_RESIDUAL), best, -1)
    strength = np.clip(
        np.linalg.norm(d, axis=-1)[..., None] / np.linalg.norm(direction, axis=1), 0, 1
    )
    seam = (label < 0) & (r >= _MAX_RESIDUAL) & (strength.min(-1) > 0.5)
    return _Pixels(label, strength, seam)


_EIGHT = np.ones((3, 3), dtype=bool)


def _hue_neighbours() -> frozenset[tuple[int, int]]:
    """Palette index pairs adjacent on the hue circle: the colours one shape drifts between."""
    hues = [colorsys.rgb_to_hsv(*(c / 255.0))[0] for c in _PALETTE]
    order = sorted(range(len(hues)), key=hues.__getitem__)
    pairs = zip(order, order[1:] + order[:1], strict=True)
    return frozenset(p for a, b in pairs for p in ((a, b), (b, a)))


_NEIGHBOURS = _hue_neighbours()


def _box(mask: np.ndarray) -> tuple[int, int]:
    ys, xs = np.nonzero(mask)
    return int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)


def _solidity(mask: np.ndarray) -> float:
    """Pixel area over the area of the convex hull of the pixels' corners (1: convex)."""
    ys, xs = np.nonzero(mask)
    corners = np.concatenate([np.stack([xs + dx, ys + dy], 1) for dx in (0, 1) for dy in (0, 1)])
    return float(mask.sum() / ConvexHull(corners).volume)


@dataclass
class _Region:
    """Pixels of one candidate object and the palette colours among them."""

    mask: np.ndarray
    colours: set[int]

    @property
    def pixels(self) -> int:
        return int(self.mask.sum())

    def thin(self) -> bool:
        """A sliver (fringe along an edge): under 3 pixels thick on average."""
        return self.pixels < _SLIVER_THICKNESS * max(_box(self.mask))


def _one_blob(mask: np.ndarray, aspect: float, solidity: float) -> bool:
    """Whether pixels form one shape's blob: a square-ish box and a nearly convex outline."""
    w, h = _box(mask)
    return max(w, h) <= aspect * min(w, h) and _solidity(mask) >= solidity


def _belongs_with(small: _Region, big: _Region) -> bool:
    """Whether ``small`` (touching ``big``) is part of the same shape, not a shape of its own:
    a fringe or sliver, or a patch into which the shape's colour drifted, forming one blob
    (between colours far apart on the hue circle, only a rounder, more convex one)."""
    if small.pixels < _MIN_PIXELS or small.thin():
        return True
    union = small.mask | big.mask
    if any(a == b or (a, b) in _NEIGHBOURS for a in small.colours for b in big.colours):
        return _one_blob(union, _MAX_ASPECT, _MIN_SOLIDITY)
    return _one_blob(union, _MAX_ASPECT_FAR, _MIN_SOLIDITY_FAR)


def _merge_regions(regions: list[_Region]) -> list[_Region]:
    """Merge touching regions that belong together, smallest first, until none do."""
    merged = True
    while merged:
        merged = False
        regions.sort(key=lambda r: r.pixels)
        for i, small in enumerate(regions):
            grown = ndimage.binary_dilation(small.mask, _EIGHT)
            big = next(
                (b for b in regions[i + 1 :] if (grown & b.mask).any() and _belongs_with(small, b)),
                None,
            )
            if big is not None:
                big.mask, big.colours = big.mask | small.mask, big.colours | small.colours
                del regions[i]
                merged = True
                break
    return regions


def _regions(px: _Pixels) -> list[_Region]:
    """Candidate objects: 8-connected components of each colour, each grown over the seam
    pixels (mixes where a shape's colour turns) of its foreground blob nearest to it, then
    merged."""
    comp = np.zeros(px.label.shape, dtype=int)
    colours = {}
    for k in np.unique(px.label[px.label >= 0]):
        lab, n = ndimage.label(px.label == k, structure=_EIGHT)
        comp = np.where(lab > 0, lab + len(colours), comp)
        colours.update({len(colours) + i: int(k) for i in range(1, n + 1)})
    if not colours:
        return []
    blobs, _ = ndimage.label((comp > 0) | px.seam, structure=_EIGHT)
    iy, ix = ndimage.distance_transform_edt(comp == 0, return_distances=False, return_indices=True)
    grow = px.seam & (blobs == blobs[iy, ix])  # only within the seam pixel's own blob
    comp = np.where(grow, comp[iy, ix], comp)
    return _merge_regions([_Region(comp == i, {k}) for i, k in colours.items()])


def _shape_of(fill: float, skew: float) -> str:
    if skew > _TRIANGLE_SKEW:  # mass well below the box centre: an upright triangle
        return "triangle"
    if fill > 0.885:
        return "square"
    if fill > 0.64:
        return "circle"
    return "triangle"


def _describe(region: _Region, px: _Pixels) -> Detection | None:
    """The shape a region shows, or None for a fleck, sliver or faint blob: its dominant colour,
    and soft coverage (sub-pixel area and extents) around it, measured as distance from the
    background so that a drifting hue still counts as covered."""
    colours = sorted(region.colours)
    k = max(colours, key=lambda c: float(px.strength[..., c][region.mask & (px.label == c)].sum()))
    cover = px.strength[..., k] * ndimage.binary_dilation(region.mask, _EIGHT)
    area = float(cover.sum())
    if area < _MIN_AREA or region.thin():
        return None
    if float(cover[cover >= _SOLID].sum()) < _MIN_SOLID_SHARE * area:
        return None  # a faint or blurry blob: too little of it is solid colour
    w, h = float(cover.max(0).sum()), float(cover.max(1).sum())
    fill = area / (w * h)
    extent = max(w, h)
    rows, prof, yy = cover.sum(1), cover.max(1), np.arange(cover.shape[0])
    skew = float((rows @ yy) / rows.sum() - (prof @ yy) / prof.sum()) / h
    ys, xs = np.nonzero(region.mask)
    return Detection(
        shape=_shape_of(fill, skew),
        colour=_NAMES[k],
        size="large" if extent > _SIZE_THRESHOLD else "small",
        cx=float(xs.min() + xs.max() + 1) / 2,
        cy=float(ys.min() + ys.max() + 1) / 2,
        extent=extent,
        area=area,
        fill=fill,
        skew=skew,
    )


def detect(image) -> list[Detection]:
    """The shapes in an image, left to right then top to bottom."""
    px = _classify_pixels(image_array(image))
    found = [_describe(r, px) for r in _regions(px)]
    return sorted((d for d in found if d is not None), key=lambda o: (o.cx, o.cy))


def _as_prompt(prompt) -> Prompt:
    if isinstance(prompt, Prompt):
        return prompt
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a caption str or a Prompt, got {prompt!r}")
    return parse_caption(prompt)


def judge(objects: Sequence[ShapeObject], prompt: str | Prompt) -> Verdict:
    """Whether ``objects`` satisfy the caption: one requirement per group (+ relation).

    "a X" needs at least one match, a number needs exactly that many; a relation must hold
    between every matching pair (first group REL second group). Applied to a scene's own
    objects it is the ground truth that :func:`check` estimates from pixels.
    """
    parsed = _as_prompt(prompt)
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


def check(image, prompt: str | Prompt) -> Verdict:
    """Whether the image shows what the caption asks: :func:`judge` on :func:`detect`."""
    parsed = _as_prompt(prompt)
    return judge(detect(image), parsed)
