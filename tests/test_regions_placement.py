"""Placement (``RegionalPrompt(place=...)``): the pure maths, bad input, and what it does to the
model's prediction on the tiny random pipelines and the micro world."""

from __future__ import annotations

import math

import pytest
import torch

from clipguide.conditioning import Region, RegionalPrompt
from clipguide.conditioning.layout_policy import LayoutUse, regional_prompt
from clipguide.conditioning.layouts import Layout
from clipguide.conditioning.placement import (
    NEUTRAL,
    blob_weights,
    colour_in_text,
    parse_colour,
    placement_delta,
)
from clipguide.conditioning.region_attention import colour_latents
from clipguide.guidance.schedulers import split_model_output
from clipguide.guidance.step import DenoiserStep
from clipguide.testing import tiny_sd_pipeline, tiny_sdxl_pipeline

SIZE = dict(height=24, width=40)  # latents 12x20: not square


# -- pure maths ----------------------------------------------------------------------------------
def test_blob_weights_peak_in_the_box_centre_on_a_non_square_grid():
    w = blob_weights([(0.0, 0.0, 0.5, 1.0), (0.5, 0.5, 1.0, 1.0)], (12, 20))
    assert w.shape == (2, 12, 20)
    assert 0 <= float(w.min()) and float(w.max()) <= 1
    for r, (row, col) in enumerate([(5.5, 4.5), (8.5, 14.5)]):
        flat = int(w[r].argmax())
        assert abs(flat // 20 - row) <= 0.5 and abs(flat % 20 - col) <= 0.5
    assert float(w[0][:, 15:].max()) < 0.01  # the left box's blob stays on the left


def test_blob_weights_resize_a_mask_by_area():
    mask = torch.zeros(8, 8)
    mask[:, :4] = 1
    w = blob_weights([mask], (4, 2))
    assert torch.equal(w[0], torch.tensor([[1.0, 0.0]] * 4))


def test_placement_delta_reaches_the_target_where_the_weight_is_one():
    x0 = torch.randn(2, 4, 3, 5)
    targets = torch.randn(1, 4)
    weights = torch.zeros(1, 3, 5)
    weights[0, 1, 2] = 1.0
    pulled = x0 + placement_delta(x0, targets, weights, 1.0)
    assert torch.allclose(pulled[:, :, 1, 2], targets.expand(2, 4))
    untouched = torch.ones(3, 5, dtype=torch.bool)
    untouched[1, 2] = False
    assert torch.equal(pulled[:, :, untouched], x0[:, :, untouched])
    half = x0 + placement_delta(x0, targets, weights, 0.5)
    assert torch.allclose(half[:, :, 1, 2], (x0[:, :, 1, 2] + targets) / 2)


def test_overlapping_blobs_share_so_the_pull_never_overshoots():
    x0 = torch.zeros(1, 1, 1, 1)
    targets = torch.tensor([[1.0], [3.0]])
    weights = torch.ones(2, 1, 1)
    pulled = x0 + placement_delta(x0, targets, weights, 1.0)
    assert float(pulled) == pytest.approx(2.0)  # the mean of the two, not their sum


def test_colours_are_read_from_the_prompt_or_given():
    assert colour_in_text("two red circles") == (255, 0, 0)
    assert colour_in_text("a circle") is None
    assert colour_in_text("a (blue:1.2) bird") == (0, 0, 255)  # weight syntax is read through
    assert Region("a circle", box=(0, 0, 1, 1)).placement_colour() == NEUTRAL
    assert Region("a blue square", box=(0, 0, 1, 1)).placement_colour() == (0, 0, 255)
    given = Region("a fox", box=(0, 0, 1, 1), colour="#ff8800")
    assert given.placement_colour() == (255, 136, 0)
    assert parse_colour((1, 2, 3)) == (1, 2, 3)


@pytest.mark.parametrize(
    "kwargs, named",
    [
        (dict(place=1.5), "place=1.5"),
        (dict(place=-0.1), "place=-0.1"),
        (dict(place="0.5"), "place='0.5'"),
        (dict(place_stop=0), "place_stop=0"),
        (dict(place_stop=1.2), "place_stop=1.2"),
    ],
)
def test_bad_placement_settings_are_refused_by_name(kwargs, named):
    with pytest.raises(ValueError, match=named):
        RegionalPrompt([Region("a cat", box=(0, 0, 1, 1))], **kwargs)


@pytest.mark.parametrize("colour", ["not-a-colour", (300, 0, 0), (1, 2), 5])
def test_bad_region_colours_are_refused_by_name(colour):
    with pytest.raises(ValueError, match="colour="):
        Region("a cat", box=(0, 0, 1, 1), colour=colour)


def test_layout_use_passes_placement_to_the_regional_prompt():
    layout = Layout("left", "relation", (Region("a cat", box=(0, 0, 0.5, 1)),))
    rp = regional_prompt(layout, LayoutUse(place=0.7, place_stop=0.4))
    assert (rp.place, rp.place_stop) == (0.7, 0.4)
    with pytest.raises(ValueError, match="place_stop=0"):
        LayoutUse(place_stop=0)


# -- on pipelines ----------------------------------------------------------------------------------
@pytest.fixture(scope="module", params=["sdxl", "sd"])
def pipe(request):
    built = tiny_sdxl_pipeline() if request.param == "sdxl" else tiny_sd_pipeline()
    built.set_progress_bar_config(disable=True)
    return built


def _run(pipe, seed=0, steps=4, **kwargs):
    return pipe(
        prompt="a red circle",
        num_inference_steps=steps,
        guidance_scale=5.0,
        output_type="latent",
        generator=torch.Generator().manual_seed(seed),
        **SIZE,
        **kwargs,
    ).images


def test_place_zero_is_regions_alone_bit_for_bit(pipe):
    regions = [Region("a blue square", box=(0, 0, 0.5, 1))]
    with RegionalPrompt(regions).attach(pipe):
        alone = _run(pipe)
    with RegionalPrompt(regions, place=0.0).attach(pipe):
        zero = _run(pipe)
    assert torch.equal(alone, zero)


@pytest.mark.parametrize("scheduler", ["default", "lcm"])
def test_full_placement_makes_the_predicted_latents_the_colour_in_the_blob_centre(pipe, scheduler):
    """With place=1 the scheduler steps with an x0 equal to the region's colour latent where
    the blob's weight is 1 (the box centre), during the placement window only: afterwards the
    model's output passes unchanged. LCM steps with that x0 too (its boundary scalings barely
    move it: test_guidance_schedulers)."""
    if scheduler == "lcm":
        from diffusers import LCMScheduler

        default = pipe.scheduler
        pipe.scheduler = LCMScheduler.from_config(default.config)
        try:
            _full_placement(pipe)
        finally:
            pipe.scheduler = default
    else:
        _full_placement(pipe)


def _full_placement(pipe):
    box = (0.0, 0.0, 0.55, 11 / 12)  # centred on the cell (5, 5) of the 12x20 latents
    rp = RegionalPrompt([Region("a blue square", box=box)], place=1.0, place_stop=0.5)
    target = colour_latents(pipe, [(0, 0, 255)])[0]
    raw, changed = [], []

    def recorder(into):
        def record(module, args, kwargs, output):
            into.append(DenoiserStep.from_unet_call(pipe, args, kwargs, output))

        return record

    before = pipe.unet.register_forward_hook(recorder(raw), with_kwargs=True)
    try:
        with rp.attach(pipe):  # the regions' hook runs after `before`, before `after`
            after = pipe.unet.register_forward_hook(recorder(changed), with_kwargs=True)
            try:
                _run(pipe, steps=4)
            finally:
                after.remove()
    finally:
        before.remove()
    weights = blob_weights([box], changed[0].latents.shape[-2:])[0]
    centre = weights >= 1 - 1e-6
    assert int(centre.sum()) == 1
    total = len(changed)
    for k, (a, b) in enumerate(zip(raw, changed, strict=True)):
        if k / total < 0.5:
            x0 = split_model_output(b.combined(), b.latents, b.level)[0]
            assert torch.allclose(x0[0][:, centre][:, 0], target, atol=1e-3), k
            assert not torch.equal(a.output, b.output)
        else:
            assert torch.equal(a.output, b.output), k


def test_colour_latents_encode_through_the_pipelines_vae(pipe):
    found = colour_latents(pipe, [(255, 0, 0), (0, 0, 255)])
    assert found.shape == (2, pipe.vae.config.latent_channels)
    side = 8 * pipe.vae_scale_factor
    image = torch.tensor([1.0, -1.0, -1.0])[None, :, None, None].expand(1, 3, side, side)
    with torch.no_grad():
        direct = pipe.vae.encode(image).latent_dist.mean.mean(dim=(2, 3))
    assert torch.allclose(found[0], direct[0] * pipe.vae.config.scaling_factor, atol=1e-5)
    assert not torch.allclose(found[0], found[1])


def test_placement_with_an_unsupported_scheduler_is_refused_before_sampling():
    from diffusers import EDMEulerScheduler

    built = tiny_sdxl_pipeline()
    built.scheduler = EDMEulerScheduler()  # its own preconditioning: x0 is not read from eps
    regions = [Region("a cat", box=(0, 0, 1, 1))]
    with pytest.raises(ValueError, match=r"place=0.5: scheduler EDMEulerScheduler is not sup"):
        RegionalPrompt(regions, place=0.5).attach(built)
    with RegionalPrompt(regions).attach(built):  # regions alone work on any scheduler
        pass


def test_placement_on_a_vae_less_pipeline_is_refused_before_sampling():
    built = tiny_sdxl_pipeline()
    built.vae = None
    with pytest.raises(ValueError, match="place"):
        RegionalPrompt([Region("a cat", box=(0, 0, 1, 1))], place=0.5).attach(built)


def test_micro_world_starts_the_object_in_its_box():
    """On the shipped micro world, the prediction is pulled near the region's colour at the
    box during the window, and the final image stays closer to it than regions alone leave
    it; weight 0 (placement only) places as well."""
    from clipguide.shapes import DEFAULT_GUIDANCE_SCALE, DEFAULT_STEPS, pipeline

    micro = pipeline(progress=False)
    box = (0.0, 0.0, 0.5, 1.0)
    target = colour_latents(micro, [(0, 0, 255)])[0]
    last_placed = math.ceil(0.3 * DEFAULT_STEPS) - 1

    def distance(weight: float, place: float, seed: int) -> tuple[float, float]:
        seen = []

        def record(module, args, kwargs, output):
            step = DenoiserStep.from_unet_call(micro, args, kwargs, output)
            seen.append(split_model_output(step.combined(), step.latents, step.level)[0])

        rp = RegionalPrompt([Region("a blue circle", box=box, weight=weight)], place=place)
        with rp.attach(micro):
            handle = micro.unet.register_forward_hook(record, with_kwargs=True)
            try:
                micro(
                    prompt="a circle and a square",
                    num_inference_steps=DEFAULT_STEPS,
                    guidance_scale=DEFAULT_GUIDANCE_SCALE,
                    generator=torch.Generator().manual_seed(seed),
                    output_type="latent",
                )
            finally:
                handle.remove()
        weights = blob_weights([box], seen[0].shape[-2:])[0]

        def far(x0):
            return float(((x0[0] * weights).sum((1, 2)) / weights.sum() - target).norm())

        return far(seen[last_placed]), far(seen[-1])

    for seed in range(3):
        window, final = distance(1.0, 0.0, seed)
        for weight in (1.0, 0.0):
            placed_window, placed_final = distance(weight, 0.9, seed)
            assert placed_window < 0.6 * window, (seed, weight)
            assert placed_final < final, (seed, weight)


def test_placement_keeps_the_pipelines_dtype():
    """bf16 pipeline: the changed UNet output stays bf16 and placement changes the result."""
    built = tiny_sdxl_pipeline().to(dtype=torch.bfloat16)
    built.set_progress_bar_config(disable=True)
    regions = [Region("a blue square", box=(0, 0, 0.5, 1))]
    seen = []
    with RegionalPrompt(regions).attach(built):
        alone = _run(built, steps=2)
    with RegionalPrompt(regions, place=0.9).attach(built):
        handle = built.unet.register_forward_hook(lambda m, a, out: seen.append(out[0].dtype))
        try:
            placed = _run(built, steps=2)
        finally:
            handle.remove()
    assert set(seen) == {torch.bfloat16} and placed.dtype == torch.bfloat16
    assert torch.isfinite(placed.float()).all() and not torch.equal(placed, alone)
