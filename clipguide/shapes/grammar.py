"""The micro world's caption grammar: colours, shapes, sizes, counts and relations, the parsed
form of a caption (:class:`Prompt` of :class:`Group`), and :func:`parse_caption`.

The task families mirror GenEval (single object, two objects, counting, colours, position,
colour attribution) plus size; ``composite`` mixes them (e.g. "two red circles above a blue
square") and is used for training and the command line example.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "COLOURS",
    "FAMILIES",
    "NUMBERS",
    "RELATIONS",
    "SHAPES",
    "SIZES",
    "TRAIN_FAMILIES",
    "Group",
    "Prompt",
    "parse_caption",
]

# Far apart in RGB (minimum pairwise distance ~114) so an oracle separates them robustly.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "yellow": (235, 200, 30),
    "green": (40, 165, 70),
    "cyan": (30, 185, 205),
    "blue": (40, 70, 210),
    "purple": (150, 55, 185),
}
SHAPES = ("circle", "square", "triangle")
SIZES = ("small", "large")
RELATIONS = ("left of", "right of", "above", "below")
FAMILIES = (
    "single_object",
    "two_object",
    "counting",
    "colors",
    "position",
    "color_attr",
    "size",
)
TRAIN_FAMILIES = FAMILIES + ("composite",)
NUMBERS = {"one": 1, "two": 2, "three": 3, "four": 4}
_NUMBER_WORDS = {v: k for k, v in NUMBERS.items()}


@dataclass(frozen=True)
class Group:
    """A noun phrase: ``count`` objects (exactly if ``exact``, else at least)."""

    shape: str
    count: int = 1
    exact: bool = False
    colour: str | None = None
    size: str | None = None

    def text(self) -> str:
        words = [_NUMBER_WORDS[self.count] if self.exact else "a"]
        words += [w for w in (self.size, self.colour) if w]
        words.append(self.shape + ("s" if self.count > 1 else ""))
        return " ".join(words)

    def matches(self, obj: Any) -> bool:
        """Whether ``obj`` (a ``ShapeObject``: shape, colour, size) fits this phrase."""
        return (
            obj.shape == self.shape
            and (self.colour is None or obj.colour == self.colour)
            and (self.size is None or obj.size == self.size)
        )


@dataclass(frozen=True)
class Prompt:
    """A parsed caption: one or two groups, optionally related spatially (first REL second)."""

    groups: tuple[Group, ...]
    relation: str | None = None
    family: str | None = field(default=None, compare=False)

    def text(self) -> str:
        sep = f" {self.relation} " if self.relation else " and "
        return sep.join(g.text() for g in self.groups)


_TOKEN = re.compile(r"[a-z]+")


def _parse_group(words: list[str], caption: str) -> Group:
    if not words:
        raise ValueError(f"caption={caption!r}: empty noun phrase")
    head, *rest = words
    if head in ("a", "an"):
        count, exact = 1, False
    elif head in NUMBERS:
        count, exact = NUMBERS[head], True
    else:
        rest, count, exact = words, 1, False
    size = colour = None
    for w in rest[:-1]:
        if w in SIZES and size is None:
            size = w
        elif w in COLOURS and colour is None:
            colour = w
        else:
            raise ValueError(
                f"caption={caption!r}: unexpected word {w!r}; accepted: number, "
                f"size {SIZES}, colour {tuple(COLOURS)}, shape {SHAPES}"
            )
    noun = rest[-1] if rest else ""
    shape = noun[:-1] if noun.endswith("s") and noun[:-1] in SHAPES else noun
    if shape not in SHAPES:
        raise ValueError(f"caption={caption!r}: unknown shape {noun!r}; accepted: {SHAPES}")
    return Group(shape=shape, count=count, exact=exact, colour=colour, size=size)


def parse_caption(caption: str) -> Prompt:
    """Parse a caption of the micro-world grammar; raise ValueError naming the bad word."""
    if not isinstance(caption, str):
        raise TypeError(f"caption must be a str, got {caption!r} ({type(caption).__name__})")
    words = _TOKEN.findall(caption.lower())
    if words[:3] == ["a", "photo", "of"]:
        words = words[3:]
    text = " ".join(words)
    found = [r for r in RELATIONS for _ in re.finditer(rf"\b{r}\b", text)]
    if len(found) > 1:
        raise ValueError(f"caption={caption!r}: at most one relation is accepted, got {found}")
    for rel in RELATIONS:
        parts = re.split(rf"\b(?:to the )?{rel}\b", text)
        if len(parts) == 2:
            a, b = (p.split() for p in parts)
            return Prompt((_parse_group(a, caption), _parse_group(b, caption)), rel)
    parts = text.split(" and ")
    if len(parts) > 2:
        raise ValueError(f"caption={caption!r}: at most two noun phrases are accepted")
    return Prompt(tuple(_parse_group(p.split(), caption) for p in parts))
