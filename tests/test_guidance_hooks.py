"""Several guidances on one pipeline: overlapping, nested, detached in any order."""

from __future__ import annotations

import pytest
import torch

from clipguide.guidance import CLIPGuidance
from clipguide.testing import tiny_clip, tiny_sd_pipeline, tiny_sdxl_pipeline

WINDOW = dict(start=0.0, stop=1.0, every=1)


@pytest.fixture(scope="module")
def clip():
    return tiny_clip(seed=5)


@pytest.fixture(scope="module")
def pipe():
    built = tiny_sdxl_pipeline()
    built.set_progress_bar_config(disable=True)
    return built


def _run(pipe, prompt="a red circle", seed=0):
    return pipe(
        prompt,
        num_inference_steps=3,
        generator=torch.Generator().manual_seed(seed),
        output_type="pt",
        guidance_scale=5.0,
    ).images


def _snapshot(pipe):
    """The instance attributes (the pipeline keeps per-call state there: names only) and hooks."""
    return (
        set(vars(pipe)),
        vars(pipe).get("encode_prompt"),
        dict(pipe.unet._forward_hooks),
        dict(pipe.unet._forward_pre_hooks),
    )


@pytest.mark.parametrize("order", [(0, 1, 2), (2, 1, 0), (1, 0, 2)])
def test_detaching_in_any_order_keeps_the_others_working_and_restores_exactly(pipe, clip, order):
    base = _run(pipe)
    before = _snapshot(pipe)
    guidances = [CLIPGuidance(clip, scale=1.0, **WINDOW, seed=i) for i in range(3)]
    attachments = [g.attach(pipe) for g in guidances]
    for k, index in enumerate(order):
        attachments[index].detach()
        remaining = [guidances[i] for i in order[k + 1 :]]
        if remaining:  # the others still see the prompt and guide
            guided = _run(pipe)
            assert not torch.equal(guided, base)
            assert all(len(g.history) == 3 for g in remaining)
    assert _snapshot(pipe) == before
    assert "encode_prompt" not in vars(pipe) and "_clipguide_hooks" not in vars(pipe)
    assert torch.equal(_run(pipe), base)


def test_two_guidances_equal_applying_both_pushes(pipe, clip):
    """Overlapping attachments compose: each guides the output the previous one left."""
    a = CLIPGuidance(clip, scale=1.0, **WINDOW)
    b = CLIPGuidance(clip, scale=0.0, record=True, **WINDOW)
    with a.attach(pipe), b.attach(pipe):
        both = _run(pipe)
    with a.attach(pipe):
        alone = _run(pipe)
    assert torch.equal(both, alone)  # a record-only companion changes nothing
    assert [r["step"] for r in b.history] == [0, 1, 2]


def test_nested_attach_outer_guides_toward_its_own_runs_prompt(pipe, clip):
    outer = CLIPGuidance(clip, scale=2.0, **WINDOW)
    inner = CLIPGuidance(clip, scale=0.0, record=True, **WINDOW)
    with outer.attach(pipe):
        with inner.attach(pipe):
            _run(pipe, "two green triangles")
        after_inner = _run(pipe, "a blue square")
    with outer.attach(pipe):
        reference = _run(pipe, "a blue square")
    assert torch.equal(after_inner, reference)


def test_detached_guidance_restores_a_users_own_encode_prompt(clip):
    pipe = tiny_sd_pipeline()
    pipe.set_progress_bar_config(disable=True)
    seen = []
    original = pipe.encode_prompt

    def users_wrapper(*args, **kwargs):
        seen.append(args[0] if args else kwargs.get("prompt"))
        return original(*args, **kwargs)

    pipe.encode_prompt = users_wrapper
    with CLIPGuidance(clip, scale=1.0, **WINDOW).attach(pipe) as guidance:
        pipe("a red circle", num_inference_steps=2, output_type="latent")
    assert vars(pipe)["encode_prompt"] is users_wrapper
    assert seen == ["a red circle"] and len(guidance.history) == len(pipe.scheduler.timesteps)


def test_full_mode_extra_unet_pass_is_not_an_evaluation_for_others(pipe, clip):
    full = CLIPGuidance(clip, mode="full", scale=1.0, **WINDOW)
    watcher = CLIPGuidance(clip, scale=0.0, record=True, **WINDOW)
    with full.attach(pipe), watcher.attach(pipe):
        _run(pipe)
    assert [r["step"] for r in watcher.history] == [0, 1, 2]
    assert [r["step"] for r in full.history] == [0, 1, 2]


def test_one_guidance_attaches_to_one_pipeline_at_a_time(pipe, clip):
    guidance = CLIPGuidance(clip)
    with guidance.attach(pipe):
        with pytest.raises(RuntimeError, match="already attached to pipe=StableDiffusionXL"):
            guidance.attach(pipe)
    guidance.attach(pipe).detach()  # free again after detaching


def test_pipelines_sharing_a_unet_are_refused_at_attach(pipe, clip):
    from diffusers import StableDiffusionXLImg2ImgPipeline

    sibling = StableDiffusionXLImg2ImgPipeline(**pipe.components)
    with CLIPGuidance(clip).attach(pipe):
        with pytest.raises(ValueError, match="shares its unet"):
            CLIPGuidance(clip).attach(sibling)
    with CLIPGuidance(clip).attach(sibling):  # fine once the first is detached
        pass
    assert "_clipguide_hooks" not in vars(sibling)
