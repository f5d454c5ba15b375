"""Negated phrases ("no blue square", "without a collar", "not a dog") name what must be absent:
the prompt reader keeps them out of parts, relations, counts and hard negatives and lists them
apart, and the selection methods do not reward an image for showing them."""

import pytest
import torch

from clipguide.model import load_clip
from clipguide.scoring import CLIPScorer
from clipguide.scoring.captions import (
    hard_negatives,
    negated_parts,
    noun_phrases,
    positive_prompt,
    prompt_parts,
    relations,
)
from clipguide.scoring.captions.edits import PromptDoc
from clipguide.scoring.methods import structure_terms
from clipguide.shapes import draw


@pytest.mark.parametrize(
    ("prompt", "objects", "negated", "positive"),
    [
        ("a red circle, no blue square", ["a red circle"], ["blue square"], "a red circle"),
        ("a red circle but no blue square", ["a red circle"], ["blue square"], "a red circle"),
        ("a red circle without a blue square", ["a red circle"], ["a blue square"], "a red circle"),
        ("a red circle and not a blue square", ["a red circle"], ["a blue square"], "a red circle"),
        ("a cat, not a dog", ["a cat"], ["a dog"], "a cat"),
        ("empty room, no furniture", ["empty room"], ["furniture"], "empty room"),
        ("no people", [], ["people"], ""),
        ("a dog without a collar, no people", ["a dog"], ["a collar", "people"], "a dog"),
        ("a dog with no collar, running", ["a dog"], ["collar"], "a dog, running"),
        ("a room without cats or dogs", ["a room"], ["cats", "dogs"], "a room"),
        ("neither a cat nor a dog, a bird", ["a bird"], ["a cat", "a dog"], "a bird"),
        ("a table without a glass of milk", ["a table"], ["a glass", "milk"], "a table"),
        (
            "no text, no watermark, a (red fox:1.2) in the snow",
            ["a red fox", "the snow"],
            ["text", "watermark"],
            "a red fox in the snow",
        ),
    ],
)
def test_negated_phrases_are_listed_apart_and_leave_the_objects(prompt, objects, negated, positive):
    assert [n.text for n in noun_phrases(prompt) if n.is_object] == objects
    assert [n.text for n in noun_phrases(prompt) if n.negated] == negated
    assert negated_parts(prompt) == negated
    assert [p.text for p in PromptDoc(positive_prompt(prompt) or "x").negated] == []
    assert [p.text for p in PromptDoc(prompt).negated] == negated  # the parsed prompt's list
    assert positive_prompt(prompt) == positive
    for part in prompt_parts(prompt):
        assert part in objects


@pytest.mark.parametrize(
    "prompt",
    [
        "a red circle, no blue square",
        "a red circle without a blue square",
        "a red circle and not a blue square",
        "a dog without a collar, no people",
    ],
)
def test_negated_phrases_are_never_edited_into_hard_negatives(prompt):
    negs = hard_negatives(prompt)
    assert negs  # the count of the object phrase still moves
    assert {n.kind for n in negs} == {"change_count"}
    negated = negated_parts(prompt)
    for n in negs:
        assert all(phrase in n.text for phrase in negated), n


def test_negated_relations_and_relations_to_negated_phrases_are_not_relations():
    assert relations("a red circle left of a blue square, no green triangle") == [
        ("a red circle", "left of", "a blue square")
    ]
    assert relations("a cat on a sofa without a cushion") == [("a cat", "on", "a sofa")]
    assert relations("a circle not left of a square") == []
    negs = hard_negatives("a circle not left of a square")
    assert not any("right of" in n.text for n in negs)  # no opposite of a negated relation
    assert not any(n.text.endswith(" not") for n in negs)  # a dropped side takes its "not"


def test_prompts_without_negations_read_as_before():
    prompt = "two cats on a blue sofa next to a yellow lamp"
    assert positive_prompt(prompt) == prompt
    assert negated_parts(prompt) == []
    assert not any(n.negated for n in noun_phrases(prompt))


# ------------------------------------------------------------------ selection on the micro world


@pytest.fixture(scope="module")
def scorer():
    return CLIPScorer(load_clip("shapes", dtype=torch.float32), progress=False)


WITH = draw(("circle", "red", 18, 32), ("square", "blue", 46, 32))
WITHOUT = draw(("circle", "red", 18, 32))
OTHER = draw(("circle", "red", 18, 32), ("triangle", "green", 46, 32))  # allowed extra


@pytest.mark.parametrize(
    "prompt",
    [
        "a red circle, no blue square",
        "a red circle without a blue square",
        "a red circle and not a blue square",
    ],
)
def test_structured_does_not_reward_the_unwanted_object(scorer, prompt):
    scores = scorer.select([WITH, WITHOUT, OTHER], prompt, "structured")
    assert scores[1] > scores[0] and scores[2] > scores[0], scores
    assert scorer.rerank([WITH, WITHOUT], prompt, method="structured").indices[0] == 1
    terms = structure_terms(scorer, [WITH, WITHOUT], prompt)
    assert terms.negated[0] > terms.negated[1]  # the blue square is found where it is drawn
    for method in ("parts", "contrastive", "views"):  # they read the positive prompt too
        assert torch.allclose(
            scorer.select([WITH, WITHOUT], prompt, method),
            scorer.select([WITH, WITHOUT], "a red circle", method),
        )
