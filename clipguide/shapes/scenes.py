"""Seeded scenes of coloured shapes: the objects that make a caption true, placed at random
without overlap, and the spatial relations between them."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from clipguide.shapes.grammar import (
    COLOURS,
    FAMILIES,
    RELATIONS,
    SHAPES,
    SIZES,
    TRAIN_FAMILIES,
    Group,
    Prompt,
)

__all__ = [
    "BACKGROUND",
    "IMAGE_SIZE",
    "Scene",
    "ShapeObject",
    "non_negative_int",
    "prompt_set",
    "relation_holds",
    "sample_scene",
]

IMAGE_SIZE = 64
BACKGROUND = (240, 240, 236)
# Extent (bounding-box side in pixels at 64x64) ranges per size class.
EXTENTS = {"small": (10.0, 13.0), "large": (19.0, 24.0)}
_GAP = 4.0  # minimum gap between bounding boxes, pixels


@dataclass(frozen=True)
class ShapeObject:
    """One shape in a scene; ``cx, cy`` is its bounding-box centre in pixels."""

    shape: str
    colour: str
    size: str
    cx: float
    cy: float
    extent: float


@dataclass(frozen=True)
class Scene:
    """A caption with the objects that make it true and the render parameters."""

    caption: str
    family: str
    objects: tuple[ShapeObject, ...]
    background: tuple[int, int, int] = BACKGROUND
    seed: int = 0


def relation_holds(a: ShapeObject, b: ShapeObject, relation: str, *, margin: float = 2.0) -> bool:
    """Whether ``a`` is ``relation`` ``b``: offset along the axis > margin and dominant."""
    dx, dy = b.cx - a.cx, b.cy - a.cy  # image y grows downwards
    along, across = {
        "left of": (dx, dy),
        "right of": (-dx, dy),
        "above": (dy, dx),
        "below": (-dy, dx),
    }[relation]
    return along > margin and along >= abs(across)


def _extent(rng: np.random.Generator, size: str) -> float:
    lo, hi = EXTENTS[size]
    return float(rng.uniform(lo, hi))


def _free(box: tuple[float, float, float], placed: list[tuple[float, float, float]]) -> bool:
    cx, cy, e = box
    return all(
        abs(cx - px) >= (e + pe) / 2 + _GAP or abs(cy - py) >= (e + pe) / 2 + _GAP
        for px, py, pe in placed
    )


def _place(
    rng: np.random.Generator,
    extents: list[float],
    ok=None,
    tries: int = 300,
) -> list[tuple[float, float]] | None:
    """Random non-overlapping centres for the extents; ``ok(centres)`` filters full layouts."""
    for _ in range(tries):
        placed: list[tuple[float, float, float]] = []
        for e in extents:
            lo, hi = e / 2 + 1.5, IMAGE_SIZE - e / 2 - 1.5
            for _ in range(50):
                box = (float(rng.uniform(lo, hi)), float(rng.uniform(lo, hi)), e)
                if _free(box, placed):
                    placed.append(box)
                    break
            else:
                break
        if len(placed) == len(extents):
            centres = [(x, y) for x, y, _ in placed]
            if ok is None or ok(centres):
                return centres
    return None


def _pick(rng: np.random.Generator, items, k: int = 1, replace: bool = False) -> list:
    idx = rng.choice(len(items), size=k, replace=replace)
    return [items[int(i)] for i in np.atleast_1d(idx)]


def _prompt_for(family: str, rng: np.random.Generator) -> Prompt:
    colours = list(COLOURS)
    if family == "single_object":
        return Prompt((Group(_pick(rng, SHAPES)[0]),), family=family)
    if family == "colors":
        size = _pick(rng, SIZES)[0] if rng.random() < 0.3 else None
        return Prompt((Group(_pick(rng, SHAPES)[0], colour=_pick(rng, colours)[0], size=size),))
    if family == "counting":
        return Prompt((Group(_pick(rng, SHAPES)[0], count=int(rng.integers(1, 5)), exact=True),))
    s1, s2 = _pick(rng, SHAPES, 2)
    if family == "two_object":
        return Prompt((Group(s1), Group(s2)))
    if family == "position":
        return Prompt((Group(s1), Group(s2)), relation=_pick(rng, RELATIONS)[0])
    if family == "color_attr":
        c1, c2 = _pick(rng, colours, 2)
        return Prompt((Group(s1, colour=c1), Group(s2, colour=c2)))
    if family == "size":
        z1, z2 = _pick(rng, SIZES, 2)
        return Prompt((Group(s1, size=z1), Group(s2, size=z2)))
    if family == "composite":
        groups = []
        for shape in _pick(rng, SHAPES, 2, replace=True):
            n = 2 if rng.random() < 0.3 else 1
            groups.append(
                Group(
                    shape,
                    count=n,
                    exact=n > 1,
                    colour=_pick(rng, colours)[0] if rng.random() < 0.7 else None,
                    size=_pick(rng, SIZES)[0] if rng.random() < 0.25 else None,
                )
            )
        rel = _pick(rng, RELATIONS)[0] if rng.random() < 0.6 else None
        a, b = groups
        if a.shape == b.shape and (a.colour is None or b.colour is None or a.colour == b.colour):
            other = _pick(rng, [s for s in SHAPES if s != a.shape])[0]
            groups[1] = Group(other, b.count, b.exact, b.colour, b.size)
        return Prompt(tuple(groups), relation=rel)
    raise ValueError(f"family={family!r} is not one of {TRAIN_FAMILIES}")


def _make_room(specs: list[tuple[int, str, str, str]], prompt: Prompt) -> list:
    """Four large shapes rarely fit: with four or more objects, every other one becomes small,
    unless its group names a size (the caption must stay true)."""
    if len(specs) < 4:
        return specs
    return [
        (gi, s, c, sz if i % 2 or prompt.groups[gi].size else "small")
        for i, (gi, s, c, sz) in enumerate(specs)
    ]


def _objects_for(prompt: Prompt, rng: np.random.Generator) -> tuple[ShapeObject, ...] | None:
    specs: list[tuple[int, str, str, str]] = []  # group index, shape, colour, size
    colours = list(COLOURS)
    for gi, g in enumerate(prompt.groups):
        for _ in range(g.count):
            colour = g.colour or _pick(rng, colours)[0]
            size = g.size or _pick(rng, SIZES)[0]
            specs.append((gi, g.shape, colour, size))
    specs = _make_room(specs, prompt)
    extents = [_extent(rng, sz) for *_, sz in specs]

    def ok(centres):
        if prompt.relation is None:
            return True
        objs = [
            ShapeObject(s, c, z, x, y, e)
            for (_, s, c, z), (x, y), e in zip(specs, centres, extents, strict=True)
        ]
        a = [o for o, sp in zip(objs, specs, strict=True) if sp[0] == 0]
        b = [o for o, sp in zip(objs, specs, strict=True) if sp[0] == 1]
        return all(
            relation_holds(p, q, prompt.relation, margin=8.0)
            and abs(_across(p, q, prompt.relation)) <= 0.5 * abs(_along(p, q, prompt.relation))
            for p in a
            for q in b
        )

    centres = _place(rng, extents, ok)
    if centres is None:
        return None
    return tuple(
        ShapeObject(s, c, z, round(x, 2), round(y, 2), round(e, 2))
        for (_, s, c, z), (x, y), e in zip(specs, centres, extents, strict=True)
    )


def _along(a: ShapeObject, b: ShapeObject, relation: str) -> float:
    return b.cx - a.cx if relation in ("left of", "right of") else b.cy - a.cy


def _across(a: ShapeObject, b: ShapeObject, relation: str) -> float:
    return b.cy - a.cy if relation in ("left of", "right of") else b.cx - a.cx


def non_negative_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(
            f"{name} must be a non-negative int, got {value!r} ({type(value).__name__})"
        )
    if value < 0:
        raise ValueError(f"{name} must be a non-negative int, got {value!r}")
    return int(value)


def _check_family(family, name: str = "family") -> None:
    if not isinstance(family, str) or family not in TRAIN_FAMILIES:
        raise ValueError(f"{name}={family!r} is not one of {TRAIN_FAMILIES}")


def sample_scene(seed: int, family: str | None = None) -> Scene:
    """The scene for ``seed`` (deterministic); family drawn from TRAIN_FAMILIES if None."""
    seed = non_negative_int("seed", seed)
    if family is not None:
        _check_family(family)
    rng = np.random.default_rng([seed, 7919])
    if family is None:
        family = TRAIN_FAMILIES[int(rng.integers(len(TRAIN_FAMILIES)))]
    while True:
        prompt = _prompt_for(family, rng)
        objects = _objects_for(prompt, rng)
        if objects is not None:
            break
    order = rng.permutation(len(objects))  # render order must not reveal the groups
    objects = tuple(objects[int(i)] for i in order)
    bg = tuple(int(np.clip(v + rng.integers(-8, 9), 0, 255)) for v in BACKGROUND)
    return Scene(prompt.text(), family, objects, bg, int(seed))


def prompt_set(n_per_family: int = 30, seed: int = 1234, families=FAMILIES) -> list[Scene]:
    """A fixed, seeded list of scenes (caption + family) covering each family equally."""
    if non_negative_int("n_per_family", n_per_family) < 1:
        raise ValueError(f"n_per_family must be >= 1, got {n_per_family!r}")
    non_negative_int("seed", seed)
    if isinstance(families, str) or not isinstance(families, Iterable):
        raise TypeError(f"families must be a sequence of family names, got {families!r}")
    families = tuple(families)
    for i, fam in enumerate(families):
        _check_family(fam, f"families[{i}]")
    out = []
    for fi, fam in enumerate(families):
        for i in range(n_per_family):
            out.append(sample_scene(seed * 1_000_003 + fi * 10_007 + i, fam))
    return out
