"""Layouts read from prompts: arrangements, both orders, counts, no layout, negated phrases."""

from __future__ import annotations

import pytest

from clipguide.conditioning.layouts import (
    MAX_BOXES,
    layout_objects,
    layouts_from_prompt,
    prompt_kind,
)


def _centre(box):
    x0, y0, x1, y1 = box
    return (x0 + x1) / 2, (y0 + y1) / 2


def _inside(box):
    x0, y0, x1, y1 = box
    return 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1


def _disjoint(a, b):
    return a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1]


@pytest.mark.parametrize(
    ("prompt", "first", "second", "axis", "sign"),
    [
        ("a circle left of a square", "a circle", "a square", 0, -1),
        ("a square right of a red triangle", "a square", "a red triangle", 0, 1),
        ("a triangle above a square", "a triangle", "a square", 1, -1),
        ("a blue circle below a square", "a blue circle", "a square", 1, 1),
        ("a cat under a table", "a cat", "a table", 1, 1),
    ],
)
def test_a_relation_puts_its_phrases_in_that_arrangement(prompt, first, second, axis, sign):
    (layout,) = layouts_from_prompt(prompt)
    assert layout.kind == "relation" == prompt_kind(prompt)
    by_prompt = {r.prompt: r.box for r in layout.regions}
    assert set(by_prompt) == {first, second}
    a, b = _centre(by_prompt[first]), _centre(by_prompt[second])
    assert sign * (a[axis] - b[axis]) > 0.25  # clearly in order along the relation's axis
    assert abs(a[1 - axis] - b[1 - axis]) < 1e-9  # and level across it
    assert all(_inside(box) for box in layout.boxes)
    assert _disjoint(*layout.boxes)


def test_counts_in_a_relation_become_that_many_boxes_in_the_subjects_cell():
    (layout,) = layouts_from_prompt("two red circles above a blue square")
    prompts = [r.prompt for r in layout.regions]
    assert sorted(prompts) == ["a blue square", "a red circle", "a red circle"]
    circles = [r.box for r in layout.regions if r.prompt == "a red circle"]
    square = next(r.box for r in layout.regions if r.prompt == "a blue square")
    assert all(_centre(c)[1] < _centre(square)[1] for c in circles)
    assert _disjoint(*circles)


@pytest.mark.parametrize(
    ("prompt", "kind"),
    [
        ("a blue triangle and a cyan square", "colour_binding"),
        ("a large circle and a small triangle", "size_binding"),
        ("a circle and a square", "objects"),
        ("two squares and a yellow circle", "colour_binding"),
    ],
)
def test_separate_objects_get_separate_boxes_in_both_orders(prompt, kind):
    layouts = layouts_from_prompt(prompt)
    assert [layout.kind for layout in layouts] == [kind, kind]
    first, second = layouts
    objects = layout_objects(prompt)
    boxes = sum(o.count for o in objects)
    for layout in layouts:
        assert len(layout.regions) == boxes
        assert all(_inside(b) for b in layout.boxes)
        assert all(
            _disjoint(a, b) for i, a in enumerate(layout.boxes) for b in layout.boxes[i + 1 :]
        )

    # the same phrases, the other way round: each phrase's mean x is mirrored
    def mean_x(layout, text):
        xs = [_centre(r.box)[0] for r in layout.regions if r.prompt == text]
        return sum(xs) / len(xs)

    texts = {r.prompt for r in first.regions}
    assert texts == {r.prompt for r in second.regions}
    for text in texts:
        assert mean_x(first, text) == pytest.approx(1 - mean_x(second, text))


@pytest.mark.parametrize("n", [2, 3, 4, 5, 6])
def test_a_count_becomes_that_many_disjoint_boxes_of_one_object(n):
    word = ["", "", "two", "three", "four", "five", "six"][n]
    layouts = layouts_from_prompt(f"{word} green squares")
    assert layouts and all(layout.kind == "count" for layout in layouts)
    for layout in layouts:
        assert [r.prompt for r in layout.regions] == ["a green square"] * n
        boxes = layout.boxes
        assert all(_inside(b) for b in boxes)
        assert all(_disjoint(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1 :])


@pytest.mark.parametrize(
    "prompt",
    [
        "a red circle",  # one object
        "a large purple triangle",
        "circles",  # a count the reader cannot tell
        "a photo, soft light, 85mm lens",  # no object
        "a red fox in a forest",  # a relation without an image axis
        "a dog next to a cat",
        "seven dogs",  # more boxes than MAX_BOXES
        "",
    ],
)
def test_nothing_to_lay_out_gives_no_layout(prompt):
    assert layouts_from_prompt(prompt) == []
    assert MAX_BOXES < 7


@pytest.mark.parametrize(
    ("prompt", "negated"),
    [
        ("a red circle and no blue square", "blue square"),
        ("a cat without a hat, a dog", "hat"),
        ("two circles, no triangle", "triangle"),
        ("a circle left of a square, not a triangle", "triangle"),
    ],
)
def test_a_negated_phrase_never_gets_a_box(prompt, negated):
    objects = layout_objects(prompt)
    assert all(negated not in o.text for o in objects)
    for layout in layouts_from_prompt(prompt):
        assert all(negated not in r.prompt for r in layout.regions)


def test_a_negated_phrase_leaves_one_object_and_so_no_layout():
    """Whether the reader lists "no blue square" apart or as an object, layouts drop it."""
    layouts = layouts_from_prompt("a red circle and no blue square")
    assert layouts == []  # one object remains: nothing to lay out


def test_layouts_refuse_a_non_string_prompt():
    with pytest.raises(TypeError, match="prompt must be a str"):
        layouts_from_prompt(None)  # type: ignore[arg-type]
