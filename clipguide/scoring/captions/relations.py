"""Spatial relations between the object phrases of a free-form prompt (pure Python)."""

from __future__ import annotations

from typing import NamedTuple

from clipguide.scoring.captions.edits import PromptDoc, negated_relation
from clipguide.scoring.captions.parse import plain_prompt

__all__ = ["Relation", "relations"]


class Relation(NamedTuple):
    """``subject relation object``, e.g. ("two cats", "on", "a blue sofa"); texts are spans of
    :func:`~clipguide.scoring.captions.parse.plain_prompt`, the relation lower-cased."""

    subject: str
    relation: str
    object: str


def relations(prompt: str) -> list[Relation]:
    """Every spatial relation ("left of", "above", "on top of", "under", "next to", ...) with
    an object phrase right before it in its clause and one right after it, in prompt order.

    Verbs and participles may stand between the subject and the relation ("a fox sitting
    under a tree"); the subject of "a woman in a red dress left of a man" is "a woman". A relation that only places its subject ("a cat on the left") or joins
    non-objects ("a cat in soft light") is not one, nor is a negated one ("not left of", or
    one side negated: "a dog without a collar"). Never raises for a string; ``[]`` when none is found.
    """
    doc = PromptDoc(plain_prompt(prompt))
    objects = {id(p) for p in doc.objects}
    found = []
    for k, tok in enumerate(doc.toks):
        if tok.cls != "rel" or negated_relation(doc, k):
            continue
        before = _phrase_before(doc, k)
        after = doc.by_first.get(k + 1)
        if before is None or after is None or id(before) not in objects or id(after) not in objects:
            continue
        found.append(Relation(before.text, tok.low, after.text))
    return found


_BETWEEN = ("adv", "verb", "pred")  # "a fox sitting under ...", "a cat is asleep on ..."
_ATTACHED = ("in", "with", "of", "wearing", "holding")  # "a man in a suit", "a cup of tea"


def _phrase_before(doc: PromptDoc, k: int):
    """The phrase ending before token ``k``, with only verbs, participles or predicatives
    between ("a fox sitting under a tree"); a phrase attached to an earlier one ("a woman in
    a red dress", "a cup of coffee") stands for that one."""
    j = k - 1
    while j >= 0 and j not in doc.by_last and doc.toks[j].cls in _BETWEEN:
        j -= 1
    phrase = doc.by_last.get(j)
    while phrase is not None:  # "a woman in a red dress left of ...": the woman is the subject
        i = phrase.first_token - 1
        if i < 1 or doc.toks[i].low not in _ATTACHED:
            break
        owner = doc.by_last.get(i - 1)
        if owner is None or not owner.is_object:
            break
        phrase = owner
    return phrase
