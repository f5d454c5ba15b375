"""Regions on the tiny random SDXL and SD 1.x pipelines: identities, detaching, behaviour."""

from __future__ import annotations

import contextlib

import pytest
import torch

import clipguide
from clipguide.conditioning import Region, RegionalPrompt
from clipguide.testing import tiny_sd_pipeline, tiny_sdxl_pipeline

SIZE = dict(height=24, width=40)  # latents 12x20, attention 6x10: not square


@pytest.fixture(scope="module", params=["sdxl", "sd"])
def pipe(request):
    built = tiny_sdxl_pipeline() if request.param == "sdxl" else tiny_sd_pipeline()
    built.set_progress_bar_config(disable=True)
    return built


def _run(pipe, prompt="a red circle", seed=0, steps=3, **kwargs):
    options = dict(SIZE, output_type="pt", guidance_scale=5.0)
    options.update(kwargs)
    if prompt is not None:
        options["prompt"] = prompt
    return pipe(
        num_inference_steps=steps, generator=torch.Generator().manual_seed(seed), **options
    ).images


def _state(pipe):
    unet = pipe.unet
    hooks = [
        (name, dict(m._forward_hooks), dict(m._forward_pre_hooks))
        for name, m in unet.named_modules()
    ]
    return set(vars(pipe)), list(unet.attn_processors.items()), hooks


def test_no_regions_reproduce_the_plain_output_bit_for_bit(pipe):
    base = _run(pipe, num_images_per_prompt=2)
    with RegionalPrompt([], blend=0.5).attach(pipe):
        assert torch.equal(_run(pipe, num_images_per_prompt=2), base)


@pytest.mark.parametrize("blend", [0.0, 0.3, 1.0])
def test_one_whole_image_region_with_the_whole_prompt_reproduces_it(pipe, blend):
    base = _run(pipe, prompt=["a red circle", "a blue square"])
    regions = [Region("a red circle", box=(0, 0, 1, 1))]
    with RegionalPrompt(regions, blend=blend).attach(pipe):
        # the second prompt of the batch gets the same region: not itself any more
        out = _run(pipe, prompt=["a red circle", "a blue square"])
    torch.testing.assert_close(out[0], base[0], rtol=0, atol=1e-5)
    if blend < 1.0:
        assert not torch.allclose(out[1], base[1], atol=1e-4)


def test_detaching_restores_the_pipeline_exactly(pipe):
    base = _run(pipe)
    before = _state(pipe)
    processors = dict(pipe.unet.attn_processors)
    rp = RegionalPrompt(["0,0,0.5,1:a blue square", "right:a green triangle"])
    with rp.attach(pipe):
        assert not torch.equal(_run(pipe), base)
    assert _state(pipe) == before
    assert all(processors[k] is v for k, v in pipe.unet.attn_processors.items())
    assert torch.equal(_run(pipe), base)
    rp.attach(pipe)  # attach/detach by hand
    rp.detach()
    assert _state(pipe) == before


def test_a_full_region_without_blend_is_prompting_with_its_prompt():
    """SD 1.x (no pooled embeddings): the region's prompt replaces the whole prompt's
    everywhere, so the result is the pipeline prompted with the region's prompt."""
    pipe = tiny_sd_pipeline()
    pipe.set_progress_bar_config(disable=True)
    target = _run(pipe, prompt="a blue square")
    with RegionalPrompt([Region("a blue square", box=(0, 0, 1, 1))], blend=0.0).attach(pipe):
        out = _run(pipe, prompt="a red circle")
    torch.testing.assert_close(out, target, rtol=0, atol=1e-5)


def test_a_region_changes_its_box_more_than_the_rest(pipe):
    size = dict(height=32, width=64)
    base = _run(pipe, output_type="latent", **size)
    with RegionalPrompt([Region("a green triangle", box=(0, 0, 0.5, 1))], blend=0).attach(pipe):
        out = _run(pipe, output_type="latent", **size)
    change = (out - base).abs().mean(dim=(0, 1))  # (h, w) latent cells
    inside, outside = change[:, :16].mean(), change[:, 16:].mean()
    assert inside > 2 * outside


def test_step_window_is_respected(pipe):
    def latents_per_step(rp):
        seen = []

        def record(_pipe, _step, _t, kw):
            seen.append(kw["latents"].clone())
            return kw

        with rp.attach(pipe) if rp is not None else contextlib.nullcontext():
            _run(pipe, steps=4, callback_on_step_end=record)
        return seen

    base = latents_per_step(None)
    total = len(pipe.scheduler.timesteps)  # one evaluation per loop iteration (PNDM: 5)
    for window in (dict(start=0.5), dict(stop=0.5), dict(start=0.25, stop=0.6)):
        rp = RegionalPrompt([Region("a green triangle", box=(0, 0, 1, 1), **window)], blend=0)
        acting = [bool(rp.active(k, total)) for k in range(total)]
        first = acting.index(True)
        out = latents_per_step(rp)
        assert all(torch.equal(out[k], base[k]) for k in range(first)), window
        assert not torch.equal(out[first], base[first]), window
    rp = RegionalPrompt([Region("x", box=(0, 0, 1, 1), start=0.5)], start=0.0, stop=0.5)
    assert [rp.active(p, 4) for p in range(4)] == [[], [], [], []]  # windows intersect
    rp = RegionalPrompt([Region("x", box=(0, 0, 1, 1), start=0.5)], start=0.25, stop=1.0)
    assert [bool(rp.active(p, 4)) for p in range(4)] == [False, False, True, True]


def test_prompt_embeds_from_encode_prompt_and_images_per_prompt(pipe):
    cond = clipguide.encode_prompt(pipe, "a red circle", "", num_images_per_prompt=2)
    rp = RegionalPrompt([Region("a blue square", box=(0.5, 0, 1, 1))])
    with rp.attach(pipe):
        by_embeds = _run(pipe, prompt=None, **cond.to_kwargs())
        by_text = _run(pipe, negative_prompt="", num_images_per_prompt=2)
    torch.testing.assert_close(by_embeds, by_text, rtol=0, atol=1e-5)
    assert by_embeds.shape[0] == 2


def test_composes_with_clip_guidance(pipe):
    from clipguide.guidance import CLIPGuidance
    from clipguide.testing import tiny_clip

    guidance = CLIPGuidance(tiny_clip(seed=5), scale=1.0, start=0.0, stop=1.0, every=1)
    rp = RegionalPrompt([Region("a green triangle", box=(0, 0, 0.5, 1))], blend=0)
    before = _state(pipe)
    with rp.attach(pipe):
        regions_only = _run(pipe)
    with guidance.attach(pipe):
        guided_only = _run(pipe)
    zero = guidance.replace(scale=0.0)
    with rp.attach(pipe), zero.attach(pipe):  # guidance at scale 0: the regions' output
        assert torch.equal(_run(pipe), regions_only)
    with rp.attach(pipe), guidance.attach(pipe):
        both = _run(pipe)
        assert len(guidance.history) == len(pipe.scheduler.timesteps)
    assert not torch.allclose(both, regions_only) and not torch.allclose(both, guided_only)
    full = guidance.replace(mode="full")
    attached = [rp.attach(pipe), full.attach(pipe)]
    _run(pipe)  # the extra UNet pass of "full" runs with regions (all rows conditional)
    attached[0].detach()
    attached[1].detach()
    assert _state(pipe) == before
