"""Hard-negative captions and prompt parts for binding-aware CLIP reranking (pure Python).

CLIP reads a caption almost as a bag of words (Yuksekgonul et al., "When and why
vision-language models behave like bags-of-words", ICLR 2023), so a plain CLIP score often
prefers an image with the colours, counts or positions bound wrongly. Scoring an image against
the prompt *and* against captions that differ from it in exactly one binding, and ranking by the
prompt's margin over them, asks CLIP the question that matters. Kinds of negatives:

- ``swap_attribute``: two object phrases exchange their attribute of one kind ("a blue triangle
  and a cyan square" -> "a cyan triangle and a blue square"); when only one of them has that
  kind, the attribute moves to the other ("a red fox in a forest" -> "a fox in a red forest");
- ``change_count``: a count moves by one (1 -> 2; n -> n+1 while n < 4; n -> n-1 while n > 1),
  the head noun re-inflected ("a cat" -> "two cats", "two circles" -> "one circle"); "a"/"an"
  count as one, phrases without a number ("the cats") are left alone;
- ``swap_relation``: a spatial phrase replaced by its opposite (left/right, above/below,
  on (top of)/under(neath), in front of/behind, inside/outside, foreground/background), or the
  two phrases around an asymmetric relation exchanged ("a circle left of a square" ->
  "a square left of a circle"); symmetric ones ("next to", "near") are left alone;
- ``swap_objects``: two object phrases exchange their head nouns, keeping their counts and
  attributes in place ("two red cats and a blue dog" -> "two red dogs and a blue cat");
- ``drop_object``: one object phrase removed with its connector ("and", "with", a relation or a
  verb such as "holding"), when at least one other object phrase remains.

Negated phrases ("a red circle, no blue square", "without a collar", "not a dog") name what
must be absent: they are not object phrases, so they are never parts, relation sides, counted
or edited; :func:`negated_parts` lists them.

Negatives that mean the same as the prompt are not made (swapping the colours of "a red circle
and a blue circle"; exchanging nouns where an attribute swap says the same). The rewriter works
on :func:`~clipguide.scoring.captions.parse.plain_prompt` (weights stripped, BREAK read as a comma), so
negatives are plain text: score the plain prompt as the positive. It never raises for a string
and returns ``[]`` when nothing can be rewritten.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from clipguide.scoring.captions import lexicon as lex
from clipguide.scoring.captions.edits import ALL_KINDS, MAKERS, MAX_OBJECTS, Negative, PromptDoc
from clipguide.scoring.captions.parse import NounPhrase, noun_phrases, plain_prompt
from clipguide.scoring.captions.relations import Relation, relations

__all__ = [
    "ALL_KINDS",
    "MAX_OBJECTS",
    "Negative",
    "NounPhrase",
    "hard_negatives",
    "negated_parts",
    "noun_phrases",
    "plain_prompt",
    "positive_prompt",
    "prompt_parts",
    "Relation",
    "relations",
]


_NEGATION_WORDS = lex.NEGATORS | lex.NEGATION_CARRIERS


def _finish(prompt: str, text: str) -> str:
    """Collapse whitespace and edge commas; keep the prompt's leading capital."""
    text = " ".join(text.split()).strip(" ,;")
    if prompt[:1].isupper() and text[:1].islower():
        text = text[:1].upper() + text[1:]
    return text


def _check_kinds(kinds: object) -> tuple[str, ...]:
    if isinstance(kinds, str) or not isinstance(kinds, Iterable):
        raise TypeError(
            f"kinds must be an iterable of kind names, got {kinds!r}; accepted: {ALL_KINDS}"
        )
    kinds = tuple(kinds)
    bad = [k for k in kinds if k not in ALL_KINDS]
    if bad:
        raise ValueError(f"kinds={kinds!r} has unknown {bad!r}; accepted: {ALL_KINDS}")
    return kinds


def hard_negatives(
    prompt: str, *, kinds: Iterable[str] = ALL_KINDS, limit: int | None = None
) -> list[Negative]:
    """Captions that differ from ``prompt`` in exactly one binding (see the module docstring).

    Order is deterministic: kinds take turns in ``ALL_KINDS`` order (the first of each kind,
    then the second of each, ...), so ``limit`` keeps a mix; no text repeats or equals the
    prompt. Returns ``[]`` when nothing can be rewritten.
    """
    wanted = _check_kinds(kinds)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ValueError(f"limit must be None or an int >= 0, got {limit!r}")
    text = plain_prompt(prompt)
    doc = PromptDoc(text)
    seen = {" ".join(text.lower().split()), " ".join(prompt.lower().split())}
    per_kind: list[list[Negative]] = []
    for kind in ALL_KINDS:
        if kind not in wanted:
            continue
        kept = []
        for neg in MAKERS[kind](doc):
            neg = Negative(_finish(text, neg.text), neg.kind, neg.detail)
            key = " ".join(neg.text.lower().split())
            if key not in seen and any(c.isalnum() for c in key):
                seen.add(key)
                kept.append(neg)
        per_kind.append(kept)
    mixed = [n for row in _round_robin(per_kind) for n in row]
    return mixed if limit is None else mixed[:limit]


def _round_robin(lists: list[list[Negative]]) -> list[list[Negative]]:
    depth = max((len(x) for x in lists), default=0)
    return [[x[i] for x in lists if i < len(x)] for i in range(depth)]


def prompt_parts(prompt: str) -> list[str]:
    """Each object phrase of the prompt as a caption of its own ("a blue triangle", ...).

    Returns ``[]`` unless the prompt has at least two distinct object phrases: one part would
    repeat what the whole prompt already says. Callers combine part scores with the whole.
    """
    seen: dict[str, str] = {}
    for np in noun_phrases(prompt):
        if np.is_object:
            seen.setdefault(np.text.lower(), np.text)
    return list(seen.values()) if len(seen) >= 2 else []


def negated_parts(prompt: str) -> list[str]:
    """Each object phrase the prompt says is absent, once, in prompt order: "blue square" for
    "a red circle, no blue square", "a collar" for "a dog without a collar"."""
    seen: dict[str, str] = {}
    for np in noun_phrases(prompt):
        if np.negated:
            seen.setdefault(np.text.lower(), np.text)
    return list(seen.values())


def positive_prompt(prompt: str) -> str:
    """The plain prompt without its negated phrases and their negators ("a red circle, no blue
    square" -> "a red circle"; "a dog with no collar" -> "a dog"): what must be present."""
    doc = PromptDoc(plain_prompt(prompt))
    if not doc.negated:
        return doc.text
    toks, drop = doc.toks, set()
    for np in doc.negated:
        k = np.first_token - 1
        while k >= 0 and (toks[k].cls == "neg" or toks[k].low in _NEGATION_WORDS):
            k -= 1
        drop.update(range(k + 1, np.last_token + 1))
        end = np.last_token + 1
        if (
            k >= 0
            and toks[k].cls in ("conj", "prep")
            and (end == len(toks) or toks[end].cls == "punct")
        ):
            drop.add(k)  # the connector left dangling: "a dog with", "a red circle and"
    text = doc.text
    for i in sorted(drop, reverse=True):
        text = text[: toks[i].start] + text[toks[i].end :]
    text = re.sub(r"\s+([,;])", r"\1", " ".join(text.split()))
    return _finish(doc.text, re.sub(r"([,;])(\s*[,;])+", r"\1", text))
