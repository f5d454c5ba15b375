"""Guidance acts only in its own pipeline's call, not in a sibling sharing the UNet (issue 21.3)."""

from __future__ import annotations

import pytest
import torch
from diffusers import StableDiffusionXLImg2ImgPipeline, StableDiffusionXLPipeline

from clipguide.guidance import CLIPGuidance
from clipguide.testing import tiny_clip, tiny_sdxl_pipeline

WINDOW = dict(start=0.0, stop=1.0, every=1)


@pytest.fixture(scope="module")
def clip():
    return tiny_clip(seed=5)


@pytest.fixture(scope="module")
def pipe():
    built = tiny_sdxl_pipeline()
    built.set_progress_bar_config(disable=True)
    return built


def _text2img(pipe, prompt):
    return pipe(
        prompt,
        num_inference_steps=3,
        generator=torch.Generator().manual_seed(0),
        output_type="pt",
        guidance_scale=5.0,
    ).images


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
    "components": (lambda p: StableDiffusionXLPipeline(**p.components), _text2img),
    "from_pipe": (lambda p: StableDiffusionXLPipeline.from_pipe(p), _text2img),
    "img2img": (lambda p: StableDiffusionXLImg2ImgPipeline.from_pipe(p), _img2img),
}


@pytest.mark.parametrize("kind", sorted(SIBLINGS))
def test_a_sibling_sharing_the_unet_runs_unguided_and_leaves_history_alone(pipe, clip, kind):
    build, run = SIBLINGS[kind]
    sibling = build(pipe)
    sibling.set_progress_bar_config(disable=True)
    assert sibling.unet is pipe.unet
    unguided_sibling = run(sibling, "a blue square")
    unguided_own = _text2img(pipe, "a red circle")
    with CLIPGuidance(clip, scale=2.0, **WINDOW).attach(pipe) as guidance:
        own = _text2img(pipe, "a red circle")
        history = [dict(r) for r in guidance.history]
        assert len(history) == 3
        from_sibling = run(sibling, "a blue square")
        assert torch.equal(from_sibling, unguided_sibling)  # was guided toward "a red circle"
        assert guidance.history == history  # was replaced by the sibling's run
        assert torch.equal(_text2img(pipe, "a red circle"), own)  # the owner still guides
    assert not torch.equal(own, unguided_own)
    assert guidance.history == history


def test_a_sibling_called_inside_the_owners_call_is_unguided(pipe, clip):
    """The innermost pipeline call decides: a sibling run from the owner's step callback (with
    its own scheduler, since a shared one would be reset under the owner's loop)."""
    own_scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config)
    sibling = StableDiffusionXLPipeline.from_pipe(pipe, scheduler=own_scheduler)
    sibling.set_progress_bar_config(disable=True)
    reference = _text2img(sibling, "a blue square")
    inside = []

    def callback(p, step, timestep, kwargs):
        if step == 0:
            inside.append(_text2img(sibling, "a blue square"))
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
