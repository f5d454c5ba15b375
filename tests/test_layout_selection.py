"""Best-of-N across layouts (candidates recorded, picked by structured, plain mixed in), the
policy's candidate plan, and contact sheets that draw each candidate's boxes."""

from __future__ import annotations

import pytest
from PIL import Image

from clipguide.conditioning.layout_policy import (
    DEFAULT_POLICY,
    Candidate,
    LayoutUse,
    plan_candidates,
)
from clipguide.conditioning.layouts import layouts_from_prompt
from clipguide.scoring.sheet import BOX_COLOURS, contact_sheet


def test_the_sheet_outlines_each_candidates_boxes_where_they_are():
    images = [Image.new("RGB", (64, 64), "white")] * 2
    boxes = [[(0.0, 0.0, 0.5, 1.0), (0.5, 0.0, 1.0, 1.0)], None]
    sheet = contact_sheet(images, ["a", "b"], thumb=64, padding=6, boxes=boxes, columns=2)
    plain = contact_sheet(images, ["a", "b"], thumb=64, padding=6, columns=2)
    # first thumbnail at (6, 6): its first box's left edge in the first colour, second box's
    # left edge (x = 6 + 32) in the second colour; the second thumbnail has no outline
    assert sheet.getpixel((6, 6 + 32)) == BOX_COLOURS[0]
    assert sheet.getpixel((6 + 32, 6 + 32)) == BOX_COLOURS[1]
    assert plain.getpixel((6, 6 + 32)) == (255, 255, 255)
    second = 6 + 64 + 6
    assert sheet.getpixel((second, 6 + 32)) == plain.getpixel((second, 6 + 32))


@pytest.mark.parametrize(
    ("boxes", "message"),
    [
        ([[(0.0, 0.0, 1.5, 1.0)], None], r"boxes\[0\] has \(0.0, 0.0, 1.5, 1.0\)"),
        ([[(0.5, 0.0, 0.5, 1.0)], None], r"boxes\[0\]"),
        ([None], "boxes must match images: got 1 for 2"),
    ],
)
def test_the_sheet_refuses_bad_boxes(boxes, message):
    images = [Image.new("RGB", (8, 8))] * 2
    with pytest.raises(ValueError, match=message):
        contact_sheet(images, ["a", "b"], boxes=boxes)


def test_the_plan_lays_out_first_then_keeps_a_quarter_plain_by_default():
    prompt = "a blue triangle and a cyan square"
    layouts = layouts_from_prompt(prompt)
    plan = plan_candidates(prompt, 4, "auto")
    assert [c.layout for c in plan[:3]] == layouts + layouts[:1]
    assert plan[3:] == [Candidate()]
    assert all(c.use == DEFAULT_POLICY["colour_binding"] for c in plan[:3])
    spread = plan_candidates(prompt, 4, "auto", plain=0)
    assert [c.layout for c in spread] == layouts * 2
    (alone,) = plan_candidates(prompt, 1, "auto")  # one sample alone is laid out
    assert alone.layout == layouts[0]
    assert [c.layout is None for c in plan_candidates(prompt, 3, "auto")] == [False] * 3
    assert [c.layout is None for c in plan_candidates(prompt, 8, "auto")] == [False] * 6 + [
        True
    ] * 2


def test_the_plan_is_plain_where_the_policy_uses_no_layout_or_none_is_found():
    assert plan_candidates("a red circle", 3, "auto") == [Candidate()] * 3
    off = {**DEFAULT_POLICY, "colour_binding": None}
    prompt = "a blue triangle and a cyan square"
    assert plan_candidates(prompt, 2, "auto", policy=off) == [Candidate()] * 2
    assert plan_candidates(prompt, 2, None) == [Candidate()] * 2
    # explicit layouts are used whatever the policy; None in the list is a plain candidate
    (layout,) = layouts_from_prompt("a circle left of a square")
    use = LayoutUse(blend=0.5)
    plan = plan_candidates("x", 2, [layout, None], policy=off, use=use, plain=0)
    assert plan == [Candidate(layout, use), Candidate()]


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"n": 0}, ValueError, "n must be a positive int, got 0"),
        ({"plain": 5}, ValueError, r"plain must be an int in \[0, n=4\], got 5"),
        ({"layouts": "grid"}, ValueError, "layouts='grid' is not valid; accepted: 'auto'"),
        ({"layouts": ["row"]}, TypeError, "layouts must hold Layout or None, got 'row'"),
        ({"policy": {"faces": None}}, ValueError, r"unknown kinds \['faces'\]"),
    ],
)
def test_the_plan_refuses_bad_arguments(kwargs, error, message):
    args = {"n": 4, "layouts": "auto", **kwargs}
    with pytest.raises(error, match=message):
        plan_candidates("a circle left of a square", **args)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"blend": 1.5}, r"blend=1.5 is not valid; accepted: a number in \[0, 1\]"),
        ({"start": 0.6, "stop": 0.5}, "start=0.6 must be below stop=0.5"),
        ({"weight": -1.0}, "weight=-1.0 is not valid; accepted: a number >= 0"),
    ],
)
def test_layout_use_refuses_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LayoutUse(**kwargs)


# -- best_of_n across layouts, on the micro world -----------------------------------------------
@pytest.fixture(scope="module")
def micro():
    import torch

    from clipguide import CLIPScorer, load_clip
    from clipguide.shapes import pipeline

    torch.manual_seed(0)
    return pipeline(progress=False), CLIPScorer(load_clip("shapes"), progress=False)


def test_best_of_n_across_layouts_records_layouts_and_picks_by_structured(micro):
    import torch

    from clipguide import best_of_n
    from clipguide.conditioning.layout_policy import regional_prompt

    pipe, scorer = micro
    prompt = "a blue triangle and a cyan square"
    kwargs = {"num_inference_steps": 4, "output_type": "pt"}
    result = best_of_n(
        pipe, prompt, 3, scorer, seed=5, layouts="auto", plain=1, method="structured",
        progress=False, batch_size=2, **kwargs,
    )  # fmt: skip
    plan = plan_candidates(prompt, 3, "auto", plain=1)
    assert list(result.candidates) == [plan[i] for i in result.generation_order]
    assert sum(c.layout is None for c in result.candidates) == 1  # plain mixed in
    # picked by structured with the layouts drawn on (each once), which its term reads
    drawn = list(dict.fromkeys(c.layout for c in plan if c.layout is not None))
    assert len(drawn) == 2  # both orders of the binding
    picked = scorer.select(result.images, prompt, "structured", layouts=drawn)
    assert torch.allclose(result.scores, picked)
    assert not torch.allclose(picked, scorer.select(result.images, prompt, "structured"))
    assert torch.all(result.scores[:-1] >= result.scores[1:])
    for k, cand in enumerate(result.candidates):  # each image regenerates with its layout
        if cand.layout is None:
            again = pipe(prompt, generator=result.generator(k), **kwargs).images[0]
        else:
            with regional_prompt(cand.layout, cand.use).attach(pipe):
                again = pipe(prompt, generator=result.generator(k), **kwargs).images[0]
            plain = pipe(prompt, generator=result.generator(k), **kwargs).images[0]
            assert not torch.allclose(plain, result.images[k])  # the layout did something
        assert torch.allclose(again, result.images[k], atol=1e-5)


def test_best_of_n_without_layouts_records_nothing_and_plain_needs_layouts(micro):
    from clipguide import best_of_n

    pipe, scorer = micro
    result = best_of_n(
        pipe, "a circle left of a square", 1, scorer, seed=1, progress=False,
        num_inference_steps=2, output_type="pt",
    )  # fmt: skip
    assert result.candidates == ()
    with pytest.raises(ValueError, match="plain=1 needs layouts"):
        best_of_n(pipe, "a circle", 2, scorer, plain=1, progress=False)


def test_best_of_n_batches_each_layout_once_and_keeps_seeds_in_plan_order(micro, monkeypatch):
    import contextlib

    import torch

    from clipguide import best_of_n
    from clipguide.conditioning.layout_policy import regional_prompt

    pipe, scorer = micro
    prompt = "a blue triangle and a cyan square"
    kwargs = {"num_inference_steps": 3, "output_type": "pt"}
    plan = plan_candidates(prompt, 4, "auto", plain=1)
    assert [c.layout and c.layout.name for c in plan] == ["row", "row reversed", "row", None]
    calls = []
    original = type(pipe).__call__

    def counted(self, *args, **kw):
        calls.append(kw["num_images_per_prompt"])
        return original(self, *args, **kw)

    monkeypatch.setattr(type(pipe), "__call__", counted)
    result = best_of_n(
        pipe, prompt, 4, scorer, seed=11, layouts="auto", plain=1, progress=False,
        batch_size=4, **kwargs,
    )  # fmt: skip
    assert sorted(calls) == [1, 1, 2]  # "row" once for its two seeds, then "row reversed", plain
    monkeypatch.setattr(type(pipe), "__call__", original)
    for k, seed in enumerate(result.seeds):  # image k is still seed 11 + its plan index
        i = result.generation_order[k]
        assert seed == 11 + i and result.candidates[k] == plan[i]
        with (
            regional_prompt(plan[i].layout, plan[i].use).attach(pipe)
            if plan[i].layout
            else contextlib.nullcontext()
        ):
            again = pipe(prompt, generator=result.generator(k), **kwargs).images[0]
        assert torch.allclose(again, result.images[k], atol=1e-5)
