"""Guided-step positions are counted model evaluations, for every supported scheduler."""

from __future__ import annotations

import pytest
import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DEISMultistepScheduler,
    DPMSolverMultistepScheduler,
    DPMSolverSDEScheduler,
    DPMSolverSinglestepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    HeunDiscreteScheduler,
    KDPM2AncestralDiscreteScheduler,
    KDPM2DiscreteScheduler,
    LMSDiscreteScheduler,
    PNDMScheduler,
    UniPCMultistepScheduler,
)

from clipguide.guidance import CLIPGuidance, GuidanceSettings
from clipguide.testing import tiny_sd_pipeline

# every scheduler the README lists as supported on UNet pipelines (flow matching has no UNet
# pipeline here; its positions come from the same counter)
SCHEDULERS = {
    "euler": (EulerDiscreteScheduler, {}),
    "euler_a": (EulerAncestralDiscreteScheduler, {}),
    "heun": (HeunDiscreteScheduler, {}),
    "kdpm2": (KDPM2DiscreteScheduler, {}),
    "kdpm2_a": (KDPM2AncestralDiscreteScheduler, {}),
    "lms": (LMSDiscreteScheduler, {}),
    "dpmpp_sde": (DPMSolverSDEScheduler, {}),
    "ddim": (DDIMScheduler, {}),
    "ddpm": (DDPMScheduler, {}),
    "pndm": (PNDMScheduler, {"skip_prk_steps": True}),
    "pndm_prk": (PNDMScheduler, {"skip_prk_steps": False}),
    "dpmpp_2m": (DPMSolverMultistepScheduler, {}),
    "dpmpp_single": (DPMSolverSinglestepScheduler, {}),
    "unipc": (UniPCMultistepScheduler, {}),
    "deis": (DEISMultistepScheduler, {}),
}


@pytest.fixture(scope="module")
def pipe():
    built = tiny_sd_pipeline()
    built.set_progress_bar_config(disable=True)
    return built


def _first_channels(latents):
    """A free stand-in decoder: only positions are under test here."""
    return latents[:, :3]


def _count_calls(pipe, guidance, steps, **kwargs):
    """Run the pipeline with ``guidance`` attached; return the number of UNet evaluations."""
    calls = []
    handle = pipe.unet.register_forward_pre_hook(lambda module, args: calls.append(1))
    try:
        with guidance.attach(pipe):
            pipe(
                "a red circle",
                num_inference_steps=steps,
                generator=torch.Generator().manual_seed(0),
                output_type="latent",
                **kwargs,
            )
    finally:
        handle.remove()
    return len(calls)


@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_recorded_positions_are_every_evaluation_once(pipe, clip, name):
    cls, extra = SCHEDULERS[name]
    pipe.scheduler = cls.from_config(pipe.scheduler.config, **extra)
    watcher = CLIPGuidance(
        clip, scale=0.0, record=True, start=0.0, stop=1.0, every=1, decoder=_first_channels
    )
    evaluations = _count_calls(pipe, watcher, steps=4 if name == "pndm_prk" else 3)
    assert evaluations == len(pipe.scheduler.timesteps)
    assert [r["step"] for r in watcher.history] == list(range(evaluations))


def test_pndm_default_window_guides_the_middle_of_the_run(pipe, clip):
    """PNDM repeats timesteps: with PRK steps, 8 steps are 17 evaluations of 11 timesteps."""
    pipe.scheduler = PNDMScheduler.from_config(pipe.scheduler.config, skip_prk_steps=False)
    watcher = CLIPGuidance(clip, scale=0.0, record=True, decoder=_first_channels)  # defaults
    total = _count_calls(pipe, watcher, steps=8)
    assert total == len(pipe.scheduler.timesteps) > len(set(pipe.scheduler.timesteps.tolist()))
    expected = [p for p in range(total) if watcher.settings.active(p, total)]
    assert [r["step"] for r in watcher.history] == expected
    assert expected[0] == -(-total // 4)  # starts a quarter in, not late in the run


def test_two_runs_restart_the_count(pipe, clip):
    pipe.scheduler = PNDMScheduler.from_config(pipe.scheduler.config, skip_prk_steps=True)
    watcher = CLIPGuidance(
        clip, scale=0.0, record=True, start=0.0, stop=1.0, every=1, decoder=_first_channels
    )
    with watcher.attach(pipe):
        for _ in range(2):
            pipe("a", num_inference_steps=3, output_type="latent")
            assert [r["step"] for r in watcher.history] == list(range(4))


class _Table:
    """A scheduler stand-in: a timestep table, optionally a begin index."""

    def __init__(self, timesteps, begin=None):
        self.timesteps = torch.tensor(timesteps)
        if begin is not None:
            self.step_index = None
            self.begin_index = begin


def test_counter_repeated_timesteps_and_image_to_image_offset():
    from clipguide.guidance import EvaluationCounter

    counter = EvaluationCounter()
    table = _Table([751, 501, 501, 251, 1])
    seen = [counter.advance(table, t)[0] for t in table.timesteps]
    assert seen == [0, 1, 2, 3, 4]
    # img2img: the pipeline starts at the scheduler's begin index (strength 0.5)
    counter.start_run()
    img2img = _Table([999, 666, 333, 1], begin=2)
    assert [counter.advance(img2img, t) for t in img2img.timesteps[2:]] == [
        (2, 4, True),
        (3, 4, False),
    ]


def test_counter_resyncs_when_an_evaluation_is_repeated():
    """A pipeline that evaluates one timestep twice does not shift the later positions."""
    from clipguide.guidance import EvaluationCounter

    counter = EvaluationCounter()
    table = _Table([900, 600, 300])
    order = [900, 600, 600, 300]
    assert [counter.advance(table, t)[0] for t in order] == [0, 1, 1, 2]


def test_window_positions_match_settings():
    settings = GuidanceSettings(start=0.25, stop=0.75, every=2)
    assert [p for p in range(20) if settings.active(p, 20)] == [5, 7, 9, 11, 13]
