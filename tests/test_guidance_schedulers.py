"""predict_x0 / noise_level against each diffusers scheduler's own maths."""

from __future__ import annotations

import inspect

import pytest
import torch
from diffusers import (
    CMStochasticIterativeScheduler,
    DDIMScheduler,
    DDPMScheduler,
    DEISMultistepScheduler,
    DPMSolverMultistepScheduler,
    DPMSolverSDEScheduler,
    DPMSolverSinglestepScheduler,
    EDMEulerScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
    HeunDiscreteScheduler,
    KDPM2AncestralDiscreteScheduler,
    KDPM2DiscreteScheduler,
    LCMScheduler,
    LMSDiscreteScheduler,
    PNDMScheduler,
    UniPCMultistepScheduler,
)

from clipguide.guidance.schedulers import (
    noise_level,
    output_change_from_eps,
    predict_x0,
    split_model_output,
    step_position,
)

SD_BETAS = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
STEPS = 6

# Schedulers that return pred_original_sample from step().
RETURNING = [
    EulerDiscreteScheduler,
    EulerAncestralDiscreteScheduler,
    HeunDiscreteScheduler,
    KDPM2DiscreteScheduler,
    KDPM2AncestralDiscreteScheduler,
    LMSDiscreteScheduler,  # needs scipy (a dependency: the CLI offers --scheduler lms)
    DPMSolverSDEScheduler,  # needs torchsde (dev extra)
    DDIMScheduler,
    DDPMScheduler,
]
PTYPES = ["epsilon", "v_prediction", "sample"]


def _run(scheduler, fn, steps=STEPS):
    """Drive a scheduler like a pipeline; call fn(t, sample, output) before each step()."""
    scheduler.set_timesteps(steps)
    gen = torch.Generator().manual_seed(0)
    sample = torch.randn(2, 4, 8, 8, generator=gen) * scheduler.init_noise_sigma
    checked = 0
    for t in scheduler.timesteps:
        scheduler.scale_model_input(sample, t)
        output = torch.randn(2, 4, 8, 8, generator=gen)
        expected = fn(t, sample, output)
        extra = (
            {"generator": gen}
            if "generator" in inspect.signature(scheduler.step).parameters
            else {}
        )
        result = scheduler.step(output, t, sample, **extra)
        if expected is not None:
            torch.testing.assert_close(expected, result.pred_original_sample, rtol=1e-4, atol=1e-4)
            checked += 1
        sample = result.prev_sample
    return checked


# diffusers itself raises for prediction_type="sample" in these.
NO_SAMPLE = (
    EulerAncestralDiscreteScheduler,
    DPMSolverSDEScheduler,
    KDPM2DiscreteScheduler,
    KDPM2AncestralDiscreteScheduler,
)
CASES = [(c, p) for c in RETURNING for p in PTYPES if not (p == "sample" and c in NO_SAMPLE)]


@pytest.mark.parametrize("cls,ptype", CASES, ids=lambda v: getattr(v, "__name__", v))
def test_predict_x0_matches_scheduler_pred_original_sample(cls, ptype):
    kwargs = {"clip_sample": False} if cls in (DDIMScheduler, DDPMScheduler) else {}
    scheduler = cls(**SD_BETAS, prediction_type=ptype, **kwargs)
    checked = _run(scheduler, lambda t, x, out: predict_x0(scheduler, x, out, t))
    assert checked == len(scheduler.timesteps)


@pytest.mark.parametrize("ptype", PTYPES)
@pytest.mark.parametrize(
    "cls", [DPMSolverMultistepScheduler, DPMSolverSinglestepScheduler, UniPCMultistepScheduler]
)
@pytest.mark.parametrize("karras", [False, True])
def test_predict_x0_matches_convert_model_output(cls, ptype, karras):
    scheduler = cls(**SD_BETAS, prediction_type=ptype, use_karras_sigmas=karras)

    def check(t, x, out):
        if scheduler.step_index is None:
            scheduler._init_step_index(t)
        ours = predict_x0(scheduler, x, out, t)
        torch.testing.assert_close(ours, scheduler.convert_model_output(out, sample=x))
        return None

    _run(scheduler, check)


@pytest.mark.parametrize("ptype", PTYPES)
def test_deis_eps_matches_convert_model_output(ptype):
    scheduler = DEISMultistepScheduler(**SD_BETAS, prediction_type=ptype)

    def check(t, x, out):
        if scheduler.step_index is None:
            scheduler._init_step_index(t)
        _, eps = split_model_output(out, x, noise_level(scheduler, t))
        torch.testing.assert_close(eps, scheduler.convert_model_output(out, sample=x))

    _run(scheduler, check)


def test_dpm_flow_sigmas():
    scheduler = DPMSolverMultistepScheduler(
        use_flow_sigmas=True, prediction_type="flow_prediction", flow_shift=3.0
    )

    def check(t, x, out):
        if scheduler.step_index is None:
            scheduler._init_step_index(t)
        assert noise_level(scheduler, t).kind == "flow"
        torch.testing.assert_close(
            predict_x0(scheduler, x, out, t), scheduler.convert_model_output(out, sample=x)
        )

    _run(scheduler, check)


def test_pndm_uses_alphas_cumprod():
    scheduler = PNDMScheduler(**SD_BETAS, skip_prk_steps=True)

    def check(t, x, out):
        abar = scheduler.alphas_cumprod[int(t)]
        ref = (x - (1 - abar).sqrt() * out) / abar.sqrt()
        torch.testing.assert_close(predict_x0(scheduler, x, out, t), ref)

    scheduler.set_timesteps(STEPS)
    x = torch.randn(1, 4, 8, 8)
    for t in scheduler.timesteps:
        out = torch.randn_like(x)
        check(t, x, out)
        x = scheduler.step(out, t, x).prev_sample


def test_flow_match_euler_step_is_consistent_with_x0_eps():
    """Euler on a linear flow lands exactly on (1-s') x0 + s' eps for the implied (x0, eps)."""
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    scheduler.set_timesteps(STEPS)
    x = torch.randn(1, 4, 8, 8)
    for t in scheduler.timesteps:
        level = noise_level(scheduler, t)
        idx, _ = step_position(scheduler, t)
        s_next = float(scheduler.sigmas[idx + 1])
        out = torch.randn_like(x)
        x0, eps = split_model_output(out, x, level)
        x = scheduler.step(out, t, x).prev_sample
        torch.testing.assert_close(x, (1 - s_next) * x0 + s_next * eps, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("ptype", ["epsilon", "v_prediction", "sample", "flow_prediction"])
@pytest.mark.parametrize("kind", ["sigma", "vp", "flow"])
def test_output_change_from_eps_shifts_eps_exactly(ptype, kind):
    from clipguide.guidance.schedulers import NoiseLevel

    a, b = {"sigma": (1.0, 3.7), "vp": (0.6, 0.8), "flow": (0.3, 0.7)}[kind]
    level = NoiseLevel(a, b, 1.0, ptype, kind)
    x, out, d = torch.randn(3, 2, 4, 4, dtype=torch.float64)
    x0, eps = split_model_output(out, x, level)
    x0b, epsb = split_model_output(out + output_change_from_eps(d, level), x, level)
    torch.testing.assert_close(epsb, eps + d)
    # latents fixed: x = a x0 + b eps holds before and after
    torch.testing.assert_close(a * x0b + b * epsb, a * x0 + b * eps)
    torch.testing.assert_close(a * x0 + b * eps, x)


def test_heun_doubled_timesteps_positions():
    scheduler = HeunDiscreteScheduler(**SD_BETAS)
    seen = []
    _run(scheduler, lambda t, x, out: seen.append(step_position(scheduler, t)) or None)
    assert [p for p, _ in seen] == list(range(len(scheduler.timesteps)))
    assert len(scheduler.timesteps) == 2 * STEPS - 1


@pytest.mark.parametrize("ptype", PTYPES)
@pytest.mark.parametrize("steps", [1, 4, 8])
def test_lcm_is_a_vp_scheduler_whose_denoised_sample_is_our_x0(ptype, steps):
    # LCM's boundary scalings (c_skip, c_out) barely move its x0 at its timesteps: guidance and
    # placement, which work on x0, act on what LCM steps with
    scheduler = LCMScheduler(**SD_BETAS, prediction_type=ptype)
    scheduler.set_timesteps(steps)
    gen = torch.Generator().manual_seed(0)
    sample = torch.randn(2, 4, 8, 8, generator=gen)
    for t in scheduler.timesteps:
        assert noise_level(scheduler, t).kind == "vp"
        output = torch.randn(2, 4, 8, 8, generator=gen)
        ours = predict_x0(scheduler, sample, output, t)
        result = scheduler.step(output, t, sample, generator=gen)
        torch.testing.assert_close(ours, result.denoised, rtol=3e-3, atol=3e-3)
        sample = result.prev_sample


@pytest.mark.parametrize(
    "scheduler",
    [EDMEulerScheduler(), CMStochasticIterativeScheduler(), object()],
    ids=["edm", "consistency", "object"],
)
def test_unsupported_scheduler_is_named(scheduler):
    with pytest.raises(ValueError, match=type(scheduler).__name__):
        noise_level(scheduler, 10)
