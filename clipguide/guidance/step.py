"""The guided step, written once: what one denoiser evaluation implies, and guidance's change.

Every place that reads a denoiser evaluation goes through :class:`DenoiserStep`: the UNet
forward hook on stock pipelines (:mod:`.attach`), the modular SDXL loop block (:mod:`.modular`)
and the micro world's decoder training, which records predicted x0 along sampling runs. It
holds the noise level, the unscaled latents and the model output, and derives the
classifier-free-guidance halves, the combined prediction, its x0 and eps, and the CFG
correction that ``normalize`` measures the push against. :func:`guided_change` is the step
itself: measure (``scale=0, record=True``) or compute the change of the combined prediction.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch

from .schedulers import NoiseLevel, noise_level, split_model_output

__all__ = ["DenoiserStep", "guided_change", "unet_output", "unet_timestep"]


def unet_output(output: Any) -> torch.Tensor:
    """The sample tensor of a UNet's return value (a tuple or an output object)."""
    return output[0] if isinstance(output, tuple) else output.sample


def unet_timestep(args: tuple, kwargs: dict) -> Any:
    """The timestep a UNet was called with (positional or keyword)."""
    return args[1] if len(args) > 1 else kwargs["timestep"]


@dataclasses.dataclass(frozen=True)
class DenoiserStep:
    """One model evaluation: ``output`` (fp32, all rows: unconditional then conditional under
    CFG) for the unscaled ``latents`` of the ``batch`` images at noise ``level``."""

    level: NoiseLevel
    latents: torch.Tensor
    output: torch.Tensor
    cfg: bool
    guidance_scale: float
    timestep: float

    @classmethod
    def from_unet_call(cls, pipe: Any, args: tuple, kwargs: dict, output: Any) -> DenoiserStep:
        """What a forward hook on ``pipe.unet`` sees: the (CFG-batched) call and its result.

        The noise level comes from the scheduler's state, which the pipeline has advanced by
        ``scale_model_input``; the latents are the conditional half of the model input divided
        by the scheduler's input scale.
        """
        sample = args[0] if args else kwargs["sample"]
        timestep = unet_timestep(args, kwargs)
        level = noise_level(pipe.scheduler, timestep)
        out = unet_output(output)
        n = out.shape[0]
        cfg = bool(getattr(pipe, "do_classifier_free_guidance", False)) and n % 2 == 0
        b = n // 2 if cfg else n
        return cls(
            level=level,
            latents=sample[n - b :].float() / level.input_scale,
            output=out.float(),
            cfg=cfg,
            guidance_scale=float(pipe.guidance_scale) if cfg else 1.0,
            timestep=_number(timestep),
        )

    @classmethod
    def from_prediction(
        cls, scheduler: Any, latents: torch.Tensor, timestep: Any, prediction: torch.Tensor
    ) -> DenoiserStep:
        """An already combined prediction for unscaled latents (the modular loop's state)."""
        return cls(
            level=noise_level(scheduler, timestep),
            latents=latents.float(),
            output=prediction.float(),
            cfg=False,
            guidance_scale=1.0,
            timestep=_number(timestep),
        )

    @property
    def batch(self) -> int:
        return self.latents.shape[0]

    def combined(self) -> torch.Tensor:
        """The prediction the scheduler steps with: ``u + g (c - u)`` under CFG."""
        if not self.cfg:
            return self.output
        b, out = self.batch, self.output
        return out[:b] + self.guidance_scale * (out[b:] - out[:b])

    def x0_eps(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(x0, eps) implied by the combined prediction."""
        return split_model_output(self.combined(), self.latents, self.level)

    def reference(self, eps: torch.Tensor) -> torch.Tensor:
        """What ``normalize`` scales the push to: the CFG correction ``g (eps_c - eps_u)`` in
        eps form, or ``eps`` (the combined prediction's) without CFG."""
        if not self.cfg:
            return eps
        b, out = self.batch, self.output
        eps_u = split_model_output(out[:b], self.latents, self.level)[1]
        eps_c = split_model_output(out[b:], self.latents, self.level)[1]
        return self.guidance_scale * (eps_c - eps_u)

    def measured_x0(self, full: bool) -> torch.Tensor:
        """The x0 a guided run would differentiate: the conditional one in ``full`` mode under
        CFG (the extra pass runs the conditional half), else the combined prediction's."""
        prediction = self.output[self.batch :] if (full and self.cfg) else self.combined()
        return split_model_output(prediction, self.latents, self.level)[0]

    def add(self, output: Any, change: torch.Tensor) -> Any:
        """``output`` (a tensor, tuple or output object) with ``change`` added to the
        prediction of every image (both CFG halves, so the combination moves by ``change``)."""
        out = output if isinstance(output, torch.Tensor) else unet_output(output)
        change = change.to(device=out.device, dtype=out.dtype)
        new = out + (torch.cat([change, change]) if self.cfg else change)
        if isinstance(output, torch.Tensor):
            return new
        if isinstance(output, tuple):
            return (new, *output[1:])
        output.sample = new
        return output


def _number(timestep: Any) -> float:
    return float(torch.as_tensor(timestep).reshape(-1)[0])


def guided_change(
    guidance: Any,
    step: DenoiserStep,
    targets: torch.Tensor,
    *,
    position: int,
    decoder: Any,
    model_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor | None:
    """Guidance's change of the combined prediction at this evaluation (recorded in its
    history), or None with ``scale=0`` (then the step is only measured and recorded)."""
    if guidance.settings.scale == 0:
        x0 = step.measured_x0(guidance.settings.mode == "full")
        guidance.record_step(
            x0, step.level, targets, step=position, timestep=step.timestep, decoder=decoder
        )
        return None
    x0, eps = step.x0_eps()
    return guidance.output_change(
        step.latents,
        x0,
        step.level,
        targets,
        reference=step.reference(eps),
        step=position,
        timestep=step.timestep,
        decoder=decoder,
        model_fn=model_fn,
    )
