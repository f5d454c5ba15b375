"""Thin adapter: CLIP guidance on a stock diffusers pipeline through a UNet forward hook.

Why a forward hook on the UNet: it sees exactly what the scheduler will step with (the UNet
output for the CFG-batched input) and the model input and timestep, costs no extra UNet pass,
and needs no change to the pipeline's loop, so the progress bar, callbacks and every scheduler
keep working. The hook adds the same change ``d`` to the unconditional and conditional halves,
so the CFG combination ``u + g (c - u)`` becomes ``u + g (c - u) + d`` for any ``g``.
What the evaluation implies (latents, noise level, CFG halves) is read by
:class:`~.step.DenoiserStep`, the guided step shared with the modular loop; the position in the
run comes from counting evaluations. The hook, the run's prompt and the count live in the
pipeline's :class:`~.hooks.PipelineHooks`, shared by every guidance attached to it.
"""

from __future__ import annotations

from typing import Any

import torch

from .hooks import Attachment, check_hookable, last_rows
from .schedulers import parameterisation
from .step import DenoiserStep, guided_change

__all__ = ["PipelineAttachment", "check_pipeline"]


def check_pipeline(pipe: Any) -> None:
    """Raise if guidance cannot attach to ``pipe`` (before anything is installed)."""
    check_hookable(
        pipe,
        "CLIP guidance",
        "add the guidance to its blocks with clipguide.guidance.add_to_modular_sdxl(blocks, "
        "guidance) before init_pipeline",
    )
    parameterisation(pipe.scheduler)  # fail early, naming the scheduler


class PipelineAttachment(Attachment):
    """One ``CLIPGuidance`` on one pipeline; a context manager that detaches on exit."""

    def __init__(self, guidance: Any, pipe: Any) -> None:
        check_pipeline(pipe)
        self.guidance = guidance
        super().__init__(guidance, pipe)

    def new_run(self) -> None:
        self.guidance.new_run()

    def _rerun(self, unet: Any, args: tuple, kwargs: dict, n: int, b: int, scale: float):
        """Latents -> model output of the conditional half, with grad (``full`` mode)."""
        hooks = self.hooks

        def model_fn(x: torch.Tensor) -> torch.Tensor:
            new_args = list(last_rows(tuple(args), n, b))
            new_kwargs = last_rows(dict(kwargs), n, b)
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
        if hooks is None or not guidance.wants(position, total):
            return None
        step = DenoiserStep.from_unet_call(pipe, args, kwargs, output)
        targets = guidance.targets(step.batch, hooks.prompts, hooks.per_prompt)
        model_fn = None
        if guidance.settings.mode == "full" and guidance.settings.scale != 0:
            n = step.output.shape[0]
            model_fn = self._rerun(unet, args, kwargs, n, step.batch, step.level.input_scale)
        change = guided_change(
            guidance,
            step,
            targets,
            position=position,
            decoder=getattr(pipe, "vae", None),
            model_fn=model_fn,
        )
        return None if change is None else step.add(output, change)
