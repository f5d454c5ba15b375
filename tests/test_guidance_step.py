"""The guided step is read from a denoiser evaluation in one place (DenoiserStep): the UNet hook,
the modular loop and the micro world's decoder training all use it."""

from __future__ import annotations

import torch

from clipguide.guidance.schedulers import noise_level, split_model_output
from clipguide.guidance.step import DenoiserStep
from clipguide.testing import tiny_sdxl_pipeline


def _reference_x0(pipe, args, kwargs, output) -> torch.Tensor:
    """The combined prediction's x0, derived by hand from the UNet call (what the decoder
    training's trajectory hook computed before it used DenoiserStep)."""
    sample = args[0] if args else kwargs["sample"]
    t = args[1] if len(args) > 1 else kwargs["timestep"]
    level = noise_level(pipe.scheduler, t)
    out = output[0] if isinstance(output, tuple) else output.sample
    n = out.shape[0] // 2
    combined = out[:n] + pipe.guidance_scale * (out[n:] - out[:n])
    return split_model_output(combined, sample[n:] / level.input_scale, level)[0]


def test_denoiser_step_reads_a_cfg_unet_call_as_derived_by_hand():
    pipe = tiny_sdxl_pipeline(seed=5)
    pipe.set_progress_bar_config(disable=True)
    found = []

    def hook(unet, args, kwargs, output):
        step = DenoiserStep.from_unet_call(pipe, args, kwargs, output)
        found.append((step, _reference_x0(pipe, args, kwargs, output)))

    handle = pipe.unet.register_forward_hook(hook, with_kwargs=True)
    try:
        pipe("a red circle", num_inference_steps=3, guidance_scale=3.0, output_type="latent")
    finally:
        handle.remove()
    assert len(found) == 3
    for step, reference in found:
        assert step.cfg and step.batch == 1 and step.guidance_scale == 3.0
        torch.testing.assert_close(step.x0_eps()[0], reference, rtol=0, atol=0)


def test_denoiser_step_adds_the_change_to_both_cfg_halves():
    out = torch.arange(8.0).view(2, 1, 2, 2)
    step = DenoiserStep(
        level=None, latents=torch.zeros(1, 1, 2, 2), output=out, cfg=True,
        guidance_scale=2.0, timestep=1.0,
    )  # fmt: skip
    change = torch.ones(1, 1, 2, 2)
    new = step.add((out.clone(),), change)[0]
    assert torch.equal(new, out + 1)  # u + g (c - u) moves by exactly the change
    combined = new[:1] + 2.0 * (new[1:] - new[:1])
    assert torch.equal(combined, step.combined() + change)


def test_decoder_training_records_the_step_guidance_differentiates():
    """trajectory_latents (decoder training data) gives the combined prediction's x0 at every
    evaluation, as computed by hand from the same UNet calls."""
    from clipguide.shapes.shipped import DEFAULT_GUIDANCE_SCALE, pipeline
    from clipguide.shapes.training.decoder import trajectory_latents

    pipe = pipeline(progress=False)
    expected = []

    def hook(unet, args, kwargs, output):
        expected.append(_reference_x0(pipe, args, kwargs, output))

    handle = pipe.unet.register_forward_hook(hook, with_kwargs=True)
    try:
        pipe(
            ["a red circle", "two blue squares"],
            num_inference_steps=3,
            guidance_scale=DEFAULT_GUIDANCE_SCALE,
            generator=torch.Generator().manual_seed(7),
            output_type="latent",
        )
    finally:
        handle.remove()
    found = trajectory_latents(["a red circle", "two blue squares"], 3, seed=7)
    torch.testing.assert_close(found, torch.cat(expected), rtol=0, atol=0)
