"""Thin adapter: CLIP guidance on a stock diffusers pipeline through a UNet forward hook.

Why a forward hook on the UNet: it sees exactly what the scheduler will step with (the UNet
output for the CFG-batched input) and the model input and timestep, costs no extra UNet pass,
and needs no change to the pipeline's loop, so the progress bar, callbacks and every scheduler
keep working. The hook adds the same change ``d`` to the unconditional and conditional halves,
so the CFG combination ``u + g (c - u)`` becomes ``u + g (c - u) + d`` for any ``g``.
The unscaled latents are the conditional half of the model input divided by the scheduler's
input scale; the noise level comes from the scheduler's state, which the pipeline has already
advanced by ``scale_model_input``, and the position in the run from counting evaluations. The
hook, the run's prompt and the count live in the pipeline's :class:`~.hooks.PipelineHooks`,
shared by every guidance attached to it.
"""

from __future__ import annotations

from typing import Any

import torch

from .checks import describe_object
from .hooks import PipelineHooks
from .schedulers import noise_level, parameterisation, split_model_output

__all__ = ["PipelineAttachment", "check_pipeline"]


def _is_modular(pipe: Any) -> bool:
    try:
        from diffusers.modular_pipelines import ModularPipeline
    except ImportError:  # pragma: no cover - diffusers without modular pipelines
        return False
    return isinstance(pipe, ModularPipeline)


def check_pipeline(pipe: Any) -> None:
    """Raise if guidance cannot attach to ``pipe`` (before anything is installed)."""
    if _is_modular(pipe):
        raise TypeError(
            f"pipe={describe_object(pipe)} is a modular pipeline: its guider runs the UNet once "
            "per condition, which a UNet hook cannot combine; add the guidance to its blocks "
            "with clipguide.guidance.add_to_modular_sdxl(blocks, guidance) before init_pipeline"
        )
    unet = getattr(pipe, "unet", None)
    if not isinstance(unet, torch.nn.Module) or getattr(pipe, "scheduler", None) is None:
        raise TypeError(
            f"pipe={describe_object(pipe)} is not supported: CLIP guidance attaches to pipelines "
            "with a `unet` and a `scheduler` (StableDiffusionPipeline, "
            "StableDiffusionXLPipeline and their subclasses)"
        )
    parameterisation(pipe.scheduler)  # fail early, naming the scheduler
    if not hasattr(pipe, "__dict__"):
        raise TypeError(f"pipe={describe_object(pipe)} keeps no instance attributes (__slots__)")


def _slice_batch(value: Any, n: int, b: int) -> Any:
    """Last ``b`` rows of every tensor with batch ``n`` inside args/kwargs (the CFG cond half)."""
    if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == n:
        return value[n - b :]
    if isinstance(value, dict):
        return {k: _slice_batch(v, n, b) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_slice_batch(v, n, b) for v in value)
    return value


class PipelineAttachment:
    """One ``CLIPGuidance`` on one pipeline; a context manager that detaches on exit."""

    def __init__(self, guidance: Any, pipe: Any) -> None:
        check_pipeline(pipe)
        self.guidance = guidance
        self.pipe = pipe
        self.hooks: PipelineHooks | None = PipelineHooks.of(pipe)
        self.hooks.add(self)

    def __enter__(self) -> Any:
        return self.guidance

    def __exit__(self, *exc: object) -> None:
        self.detach()

    def detach(self) -> None:
        """Leave the pipeline; the last attachment to leave restores it exactly."""
        if self.hooks is not None:
            self.hooks.remove(self)
            self.hooks = None
        if self.guidance._attachment is self:
            self.guidance._attachment = None

    def new_run(self) -> None:
        self.guidance.new_run()

    def _rerun(self, unet: Any, args: tuple, kwargs: dict, n: int, b: int, scale: float):
        """Latents -> model output of the conditional half, with grad (``full`` mode)."""
        hooks = self.hooks

        def model_fn(x: torch.Tensor) -> torch.Tensor:
            new_args = list(_slice_batch(tuple(args), n, b))
            new_kwargs = _slice_batch(dict(kwargs), n, b)
            x_in = (x * scale).to(unet.dtype)
            if new_args:
                new_args[0] = x_in
            else:
                new_kwargs["sample"] = x_in
            new_kwargs["return_dict"] = False
            with hooks.paused():  # type: ignore[union-attr]
                return unet(*new_args, **new_kwargs)[0]

        return model_fn

    def step(
        self, unet: Any, args: tuple, kwargs: dict, output: Any, position: int, total: int
    ) -> Any:
        """The guided output for this evaluation, or None to leave it unchanged."""
        guidance, pipe, hooks = self.guidance, self.pipe, self.hooks
        record_only = guidance.settings.scale == 0
        if hooks is None or (record_only and not guidance.record):
            return None
        if not guidance.settings.active(position, total):
            return None
        sample_in = args[0] if args else kwargs["sample"]
        timestep = args[1] if len(args) > 1 else kwargs["timestep"]
        level = noise_level(pipe.scheduler, timestep)
        out = output[0] if isinstance(output, tuple) else output.sample
        n = out.shape[0]
        cfg = bool(getattr(pipe, "do_classifier_free_guidance", False)) and n % 2 == 0
        b = n // 2 if cfg else n
        x = sample_in[n - b :].float() / level.input_scale
        out_f = out.float()
        targets = guidance.targets(b, hooks.prompts, hooks.per_prompt)
        t_value = float(torch.as_tensor(timestep).reshape(-1)[0])
        decoder = getattr(pipe, "vae", None)
        full = guidance.settings.mode == "full"
        if record_only:  # measured and recorded; the sampling stays exactly unguided
            # what a guided run would differentiate: the conditional x0 in full mode
            measured = out_f[b:] if (full and cfg) else _combined(out_f, b, cfg, pipe)
            x0 = split_model_output(measured, x, level)[0]
            guidance.record_step(
                x0, level, targets, step=position, timestep=t_value, decoder=decoder
            )
            return None
        combined = _combined(out_f, b, cfg, pipe)
        x0, eps = split_model_output(combined, x, level)
        reference = eps
        if cfg:
            g = float(pipe.guidance_scale)
            eps_u = split_model_output(out_f[:b], x, level)[1]
            eps_c = split_model_output(out_f[b:], x, level)[1]
            reference = g * (eps_c - eps_u)
        model_fn = self._rerun(unet, args, kwargs, n, b, level.input_scale) if full else None
        delta = guidance.output_change(
            x,
            x0,
            level,
            targets,
            reference=reference,
            step=position,
            timestep=t_value,
            decoder=decoder,
            model_fn=model_fn,
        )
        delta = delta.to(device=out.device, dtype=out.dtype)
        new = out + (torch.cat([delta, delta]) if cfg else delta)
        if isinstance(output, tuple):
            return (new, *output[1:])
        output.sample = new
        return output


def _combined(out_f: torch.Tensor, b: int, cfg: bool, pipe: Any) -> torch.Tensor:
    """The prediction the scheduler steps with: ``u + g (c - u)`` under CFG."""
    if not cfg:
        return out_f
    g = float(pipe.guidance_scale)
    return out_f[:b] + g * (out_f[b:] - out_f[:b])
