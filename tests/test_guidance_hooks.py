"""Several guidances on one pipeline: overlapping, nested, detached in any order; none of them
acts in a sibling pipeline sharing the UNet (issue 21.3)."""

from __future__ import annotations

import pytest
import torch
from diffusers import StableDiffusionXLImg2ImgPipeline, StableDiffusionXLPipeline

from clipguide.guidance import CLIPGuidance
from clipguide.testing import tiny_sd_pipeline

WINDOW = dict(start=0.0, stop=1.0, every=1)


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


# -- siblings sharing the UNet: guidance acts only in its own pipeline's call ----------------
def _img2img(pipe, prompt):
    image = torch.linspace(0, 1, 3 * 32 * 32).reshape(1, 3, 32, 32)
    return pipe(
        prompt,
        image=image,
        strength=0.7,
        num_inference_steps=4,
        generator=torch.Generator().manual_seed(0),
        output_type="pt",
        guidance_scale=5.0,
    ).images


SIBLINGS = {
    "components": (lambda p: StableDiffusionXLPipeline(**p.components), _run),
    "from_pipe": (lambda p: StableDiffusionXLPipeline.from_pipe(p), _run),
    "img2img": (lambda p: StableDiffusionXLImg2ImgPipeline.from_pipe(p), _img2img),
}


@pytest.mark.parametrize("kind", sorted(SIBLINGS))
def test_a_sibling_sharing_the_unet_runs_unguided_and_leaves_history_alone(pipe, clip, kind):
    build, run = SIBLINGS[kind]
    sibling = build(pipe)
    sibling.set_progress_bar_config(disable=True)
    assert sibling.unet is pipe.unet
    unguided_sibling = run(sibling, "a blue square")
    unguided_own = _run(pipe, "a red circle")
    with CLIPGuidance(clip, scale=2.0, **WINDOW).attach(pipe) as guidance:
        own = _run(pipe, "a red circle")
        history = [dict(r) for r in guidance.history]
        assert len(history) == 3
        from_sibling = run(sibling, "a blue square")
        assert torch.equal(from_sibling, unguided_sibling)  # was guided toward "a red circle"
        assert guidance.history == history  # was replaced by the sibling's run
        assert torch.equal(_run(pipe, "a red circle"), own)  # the owner still guides
    assert not torch.equal(own, unguided_own)
    assert guidance.history == history


def test_a_sibling_called_inside_the_owners_call_is_unguided(pipe, clip):
    """The innermost pipeline call decides: a sibling run from the owner's step callback (with
    its own scheduler, since a shared one would be reset under the owner's loop)."""
    own_scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config)
    sibling = StableDiffusionXLPipeline.from_pipe(pipe, scheduler=own_scheduler)
    sibling.set_progress_bar_config(disable=True)
    reference = _run(sibling, "a blue square")
    inside = []

    def callback(p, step, timestep, kwargs):
        if step == 0:
            inside.append(_run(sibling, "a blue square"))
        return kwargs

    guidance = CLIPGuidance(clip, scale=2.0, **WINDOW)
    with guidance.attach(pipe):
        pipe(
            "a red circle",
            num_inference_steps=3,
            generator=torch.Generator().manual_seed(0),
            output_type="pt",
            guidance_scale=5.0,
            callback_on_step_end=callback,
        )
    assert torch.equal(inside[0], reference)
    assert [r["step"] for r in guidance.history] == [0, 1, 2]
