"""Layouts read from a prompt: where each object phrase should go, as boxes of :class:`Region`.

The prompt is read by the same rule-based reader as the ``structured`` selection score
(:mod:`clipguide.scoring.captions`: object phrases with their counts and attributes, spatial
relations between them), so a layout places exactly what that score later looks for:

- "A left of / right of / above / below B" -> A's cell and B's cell in that order on that axis
  (one layout: the relation fixes the order);
- two or more object phrases ("two A and a B", "a blue A and a cyan B") -> one cell per box
  in a row, in the prompt's order and reversed (two layouts);
- a phrase with a count above one ("three squares") -> that many boxes, each prompted with the
  phrase in the singular ("a square"), as a row and as a column (a 2x2 or 2x3 grid past three);
- nothing to lay out (no object, one object, a count the reader cannot tell, more than
  :data:`MAX_BOXES` boxes, a relation without an image axis) -> no layout.

Negated phrases ("no blue square", "without a hat") never get a box. Boxes are
``(x0, y0, x1, y1)`` fractions of the image, top-left origin. Pure functions, no model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from clipguide.conditioning.regions import Region
from clipguide.scoring.captions import lexicon as lex
from clipguide.scoring.captions.edits import PromptDoc
from clipguide.scoring.captions.parse import NounPhrase, plain_prompt
from clipguide.scoring.captions.relations import relations
from clipguide.scoring.structure import relation_axis

__all__ = [
    "KINDS",
    "MAX_BOXES",
    "Layout",
    "LayoutObject",
    "layout_objects",
    "layouts_from_prompt",
    "prompt_kind",
]

MAX_BOXES = 6  # more boxes than this get cells too small to draw an object in
MAX_OBJECTS = 4
KINDS = ("relation", "colour_binding", "size_binding", "binding", "objects", "count", "single")
"""What the reader found in a prompt, most specific first (see :func:`prompt_kind`)."""

_NEGATORS = frozenset({"no", "not", "without", "never", "except", "excluding", "minus", "nor"})
Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class Layout:
    """A named arrangement of regions for one prompt; ``kind`` is :func:`prompt_kind`'s."""

    name: str
    kind: str
    regions: tuple[Region, ...]

    @property
    def boxes(self) -> tuple[Box, ...]:
        """Each region's box, in region order."""
        return tuple(r.box for r in self.regions)


@dataclass(frozen=True)
class LayoutObject:
    """An object phrase to place: its text, how many (1 when the reader says "a"), and the
    text each of its boxes is prompted with (the phrase in the singular)."""

    text: str
    count: int | None
    single: str
    attributes: tuple[tuple[str, tuple[str, ...]], ...]


def _negated(doc: PromptDoc, np: NounPhrase) -> bool:
    """Whether a negator starts the phrase or stands right before it ("no dog", "without a
    hat", "not a cat")."""
    if np.words and np.words[0].lower() in _NEGATORS:
        return True
    before = doc.toks[np.first_token - 1] if np.first_token > 0 else None
    return before is not None and before.low in _NEGATORS


def _singular(np: NounPhrase) -> str:
    """The phrase as one object: "two red circles" -> "a red circle"."""
    words = [w for w, r in zip(np.words, np.roles, strict=True) if r not in ("det", "num")]
    if np.determiner is None and np.count is None:
        keep = [w for w, r in zip(np.words, np.roles, strict=True) if r == "poss"]
        if keep:  # "my cat": keep the possessive as it is
            return np.text
    words[-1] = lex.inflect(words[-1], plural=False)
    words = [w for w in words if w.lower() not in _NEGATORS]
    return " ".join([lex.article_for(words[0]), *words])


def layout_objects(prompt: str) -> list[LayoutObject]:
    """The prompt's object phrases that can be placed (negated ones left out), in order."""
    doc = PromptDoc(plain_prompt(prompt))
    out = []
    for np in doc.objects:
        if _negated(doc, np):
            continue
        count = np.count if np.count is not None else (None if np.plural else 1)
        attrs = tuple((k, v) for k, v in np.attributes.items() if k in lex.ATTRIBUTE_KINDS)
        out.append(LayoutObject(np.text, count, _singular(np), attrs))
    return out


def _axis_relation(prompt: str, objects: Sequence[LayoutObject]):
    """The one relation with an image axis between two placeable objects, else None."""
    texts = {o.text for o in objects}
    found = [
        r
        for r in relations(prompt)
        if relation_axis(r.relation) and r.subject in texts and r.object in texts
    ]
    return found[0] if len(found) == 1 else None


def prompt_kind(prompt: str) -> str | None:
    """What the reader found, one of :data:`KINDS`, or None for no object phrase.

    ``relation``: a relation with an image axis between two objects; ``colour_binding`` /
    ``size_binding`` / ``binding``: two or more objects whose colours / sizes / other
    attributes differ; ``objects``: two or more objects otherwise; ``count``: one object
    phrase asking for more than one; ``single``: one object.
    """
    objects = layout_objects(prompt)
    if not objects:
        return None
    if len(objects) >= 2 and _axis_relation(prompt, objects) is not None:
        return "relation"
    if len(objects) >= 2:
        for kind, name in (("colour", "colour_binding"), ("size", "size_binding")):
            values = {dict(o.attributes).get(kind) for o in objects}
            if len(values) > 1:
                return name
        if len({o.attributes for o in objects}) > 1:
            return "binding"
        return "objects"
    return "count" if (objects[0].count or 1) > 1 else "single"


def _cells(n: int, box: Box, axis: int) -> list[Box]:
    """``box`` cut into ``n`` equal cells along ``axis`` (0: x, left to right; 1: y, down)."""
    x0, y0, x1, y1 = box
    lo, hi = (x0, x1) if axis == 0 else (y0, y1)
    step = (hi - lo) / n
    cuts = [(lo + k * step, lo + (k + 1) * step) for k in range(n)]
    return [(a, y0, b, y1) if axis == 0 else (x0, a, x1, b) for a, b in cuts]


def _grid(n: int, axis: int) -> list[Box]:
    """``n`` cells over the image: one row (or column) up to three, else rows of 2 or 3."""
    whole = (0.0, 0.0, 1.0, 1.0)
    if n <= 3:
        return _cells(n, whole, axis)
    per_row = 2 if n == 4 else 3
    rows = _cells(-(-n // per_row), whole, 1 - axis)
    cells = [c for r in rows for c in _cells(per_row, r, axis)]
    return cells[:n]


def _regions(objects: Sequence[LayoutObject], cells: Sequence[Box], axis: int) -> list[Region]:
    """One region per box: each object's cell cut across ``axis`` into its count."""
    out = []
    for obj, cell in zip(objects, cells, strict=True):
        n = obj.count or 1
        text = obj.single if n > 1 else obj.text
        out += [Region(text, box=b) for b in _cells(n, cell, 1 - axis)]
    return out


def _row(objects: Sequence[LayoutObject], axis: int) -> list[Region]:
    return _regions(objects, _cells(len(objects), (0.0, 0.0, 1.0, 1.0), axis), axis)


def layouts_from_prompt(prompt: str) -> list[Layout]:
    """Candidate layouts of ``prompt`` (see the module docstring); ``[]`` for nothing to lay out."""
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a str, got {type(prompt).__name__}: {prompt!r:.80}")
    kind = prompt_kind(prompt)
    objects = layout_objects(prompt)
    if kind in (None, "single") or len(objects) > MAX_OBJECTS:
        return []
    if any(o.count is None or o.count < 1 for o in objects):
        return []  # "circles", "zero cats": the reader cannot tell how many boxes
    if sum(o.count for o in objects) > MAX_BOXES:
        return []
    texts = {o.text for o in objects}
    if any(
        not relation_axis(r.relation) and {r.subject, r.object} <= texts for r in relations(prompt)
    ):
        return []  # "a fox in a forest", "a cat on a sofa": not side by side
    if kind == "count":
        (obj,) = objects
        out = []
        for name, axis in (("row", 0), ("column", 1)):
            boxes = _grid(obj.count, axis)
            if name == "column" and obj.count == 4:
                continue  # a 2x2 grid either way
            out.append(Layout(name, kind, tuple(Region(obj.single, box=b) for b in boxes)))
        return out
    if kind == "relation":
        rel = _axis_relation(prompt, objects)
        axis, sign = relation_axis(rel.relation)
        by_text = {o.text: o for o in objects}
        pair = [by_text[rel.subject], by_text[rel.object]]
        if sign > 0:  # "A right of B", "A below B": B comes first along the axis
            pair.reverse()
        if len(objects) > 2:
            return []  # a relation among more objects: no single arrangement is implied
        return [Layout(rel.relation, kind, tuple(_row(pair, axis)))]
    return [
        Layout("row", kind, tuple(_row(objects, 0))),
        Layout("row reversed", kind, tuple(_row(objects[::-1], 0))),
    ]
