"""Thin adapter: CLIP guidance on a stock diffusers pipeline through a UNet forward hook.

Why a forward hook on the UNet: it sees exactly what the scheduler will step with (the UNet
output for the CFG-batched input) and the model input and timestep, costs no extra UNet pass,
and needs no change to the pipeline's loop, so the progress bar, callbacks and every scheduler
keep working. The hook adds the same change ``d`` to the unconditional and conditional halves,
so the CFG combination ``u + g (c - u)`` becomes ``u + g (c - u) + d`` for any ``g``.
The unscaled latents are the conditional half of the model input divided by the scheduler's
input scale; the timestep's noise level and position come from the scheduler's state, which the
pipeline has already advanced by ``scale_model_input``. The prompt is read by wrapping the
pipeline's ``encode_prompt`` on the instance (removed on detach).
"""

from __future__ import annotations

import inspect
from typing import Any

import torch

from .schedulers import noise_level, parameterisation, split_model_output, step_position

__all__ = ["PipelineAttachment"]


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
    """Hooks of one ``CLIPGuidance`` on one pipeline; a context manager that detaches on exit."""

    def __init__(self, guidance: Any, pipe: Any) -> None:
        unet = getattr(pipe, "unet", None)
        if not isinstance(unet, torch.nn.Module) or getattr(pipe, "scheduler", None) is None:
            raise TypeError(
                f"pipe={type(pipe).__name__} is not supported: CLIP guidance attaches to pipelines "
                "with a `unet` and a `scheduler` (StableDiffusionPipeline, "
                "StableDiffusionXLPipeline and their subclasses)"
            )
        parameterisation(pipe.scheduler)  # fail early, naming the scheduler
        self.guidance = guidance
        self.pipe = pipe
        self.prompts: Any = None
        self.per_prompt = 1
        self._busy = False
        self._handle = unet.register_forward_hook(self._hook, with_kwargs=True)
        self._wrapped = False
        original = getattr(pipe, "encode_prompt", None)
        if callable(original):
            signature = inspect.signature(original)

            def encode_prompt(*args: Any, **kwargs: Any) -> Any:
                bound = signature.bind_partial(*args, **kwargs).arguments
                self.prompts = bound.get("prompt")
                self.per_prompt = int(bound.get("num_images_per_prompt") or 1)
                guidance.new_run()  # also covers img2img, which does not start at position 0
                return original(*args, **kwargs)

            pipe.encode_prompt = encode_prompt
            self._wrapped = True

    def __enter__(self) -> Any:
        return self.guidance

    def __exit__(self, *exc: object) -> None:
        self.detach()

    def detach(self) -> None:
        """Remove the UNet hook and the ``encode_prompt`` wrapper."""
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        if self._wrapped:
            self.pipe.__dict__.pop("encode_prompt", None)
            self._wrapped = False
        if self.guidance._attachment is self:
            self.guidance._attachment = None

    def _rerun(self, unet: Any, args: tuple, kwargs: dict, n: int, b: int, scale: float):
        """Latents -> model output of the conditional half, with grad (``full`` mode)."""

        def model_fn(x: torch.Tensor) -> torch.Tensor:
            new_args = list(_slice_batch(tuple(args), n, b))
            new_kwargs = _slice_batch(dict(kwargs), n, b)
            x_in = (x * scale).to(unet.dtype)
            if new_args:
                new_args[0] = x_in
            else:
                new_kwargs["sample"] = x_in
            new_kwargs["return_dict"] = False
            self._busy = True
            try:
                return unet(*new_args, **new_kwargs)[0]
            finally:
                self._busy = False

        return model_fn

    def _hook(self, unet: Any, args: tuple, kwargs: dict, output: Any) -> Any:
        guidance, pipe = self.guidance, self.pipe
        record_only = guidance.settings.scale == 0
        if self._busy or (record_only and not guidance.record):
            return None
        sample_in = args[0] if args else kwargs["sample"]
        timestep = args[1] if len(args) > 1 else kwargs["timestep"]
        scheduler = pipe.scheduler
        position, total = step_position(scheduler, timestep)
        if position == 0:
            guidance.new_run()
        if not guidance.settings.active(position, total):
            return None
        level = noise_level(scheduler, timestep)
        out = output[0] if isinstance(output, tuple) else output.sample
        n = out.shape[0]
        cfg = bool(getattr(pipe, "do_classifier_free_guidance", False)) and n % 2 == 0
        b = n // 2 if cfg else n
        x = sample_in[n - b :].float() / level.input_scale
        out_f = out.float()
        if cfg:
            g = float(pipe.guidance_scale)
            combined = out_f[:b] + g * (out_f[b:] - out_f[:b])
            eps_u = split_model_output(out_f[:b], x, level)[1]
            eps_c = split_model_output(out_f[b:], x, level)[1]
            reference = g * (eps_c - eps_u)
        else:
            combined = out_f
            reference = None
        x0, eps = split_model_output(combined, x, level)
        if reference is None:
            reference = eps
        targets = guidance.targets(b, self.prompts, self.per_prompt)
        model_fn = None
        if guidance.settings.mode == "full" and not record_only:
            model_fn = self._rerun(unet, args, kwargs, n, b, level.input_scale)
        delta = guidance.output_change(
            x,
            x0,
            level,
            targets,
            reference=reference,
            step=position,
            timestep=float(torch.as_tensor(timestep).reshape(-1)[0]),
            decoder=getattr(pipe, "vae", None),
            model_fn=model_fn,
        )
        if record_only:  # measured and recorded; the sampling stays exactly unguided
            return None
        delta = delta.to(device=out.device, dtype=out.dtype)
        new = out + (torch.cat([delta, delta]) if cfg else delta)
        if isinstance(output, tuple):
            return (new, *output[1:])
        output.sample = new
        return output
