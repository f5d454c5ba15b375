"""CLIP guidance as a block of the modular SDXL denoise loop (``diffusers.modular_pipelines``).

The loop step sits between the denoiser (which leaves the guider-combined prediction in
``block_state.noise_pred``) and the scheduler step, and adds the guidance change to that
prediction. The guider's separate conditional/unconditional predictions are not kept in the
block state, so ``normalize`` measures the push against the predicted noise, not the CFG
correction; and only ``mode="fast"`` is offered (``full`` would need the guider's batches).
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers.modular_pipelines import ModularPipelineBlocks
from diffusers.modular_pipelines.modular_pipeline_utils import InputParam, OutputParam

from .checks import describe_object
from .guidance import CLIPGuidance
from .schedulers import EvaluationCounter
from .step import DenoiserStep, guided_change

__all__ = ["CLIPGuidanceLoopStep", "add_to_modular_sdxl"]


class CLIPGuidanceLoopStep(ModularPipelineBlocks):
    """Loop step that applies a ``CLIPGuidance`` (``mode="fast"``) to ``noise_pred``."""

    model_name = "stable-diffusion-xl"

    def __init__(self, guidance: CLIPGuidance) -> None:
        super().__init__()
        _check_guidance(guidance)
        self.guidance = guidance
        self._counter = EvaluationCounter()

    def __deepcopy__(self, memo: dict) -> CLIPGuidanceLoopStep:
        # init_pipeline deep-copies the blocks; share the guidance (and its CLIP) instead.
        return type(self)(self.guidance)

    @property
    def description(self) -> str:
        return "CLIP-gradient guidance: adds a CLIP-similarity push to noise_pred before the scheduler step"

    @property
    def inputs(self) -> list[InputParam]:
        return [
            InputParam("latents", required=True, type_hint=torch.Tensor),
            InputParam("noise_pred", type_hint=torch.Tensor),
            InputParam("prompt"),
            InputParam("num_images_per_prompt", default=1),
        ]

    @property
    def intermediate_outputs(self) -> list[OutputParam]:
        return [OutputParam("noise_pred", type_hint=torch.Tensor)]

    @torch.no_grad()
    def __call__(self, components: Any, block_state: Any, i: int, t: Any) -> tuple[Any, Any]:
        guidance = self.guidance
        if guidance.settings.scale == 0 and not guidance.record:
            return components, block_state
        scheduler = components.scheduler
        if i == 0:
            self._counter.start_run()
        position, total, new = self._counter.advance(scheduler, t)
        if new:
            guidance.new_run()
        if not guidance.settings.active(position, total):
            return components, block_state
        pred = block_state.noise_pred
        step = DenoiserStep.from_prediction(scheduler, block_state.latents, t, pred)
        per_prompt = int(getattr(block_state, "num_images_per_prompt", None) or 1)
        targets = guidance.targets(
            step.batch, getattr(block_state, "prompt", None), per_prompt, in_run=True
        )
        decoder = getattr(components, "vae", None)
        change = guided_change(guidance, step, targets, position=position, decoder=decoder)
        if change is not None:
            block_state.noise_pred = step.add(pred, change)
        return components, block_state


def _check_guidance(guidance: Any) -> None:
    if not isinstance(guidance, CLIPGuidance):
        raise TypeError(
            f"guidance={describe_object(guidance)} is not valid; accepted: a CLIPGuidance"
        )
    if guidance.settings.mode != "fast":
        raise ValueError(
            f"mode={guidance.settings.mode!r} is not supported in the modular loop; "
            "accepted: 'fast' (guidance.replace(mode='fast'))"
        )


def _find_loop(blocks: Any) -> Any:
    """The SDXL denoise loop (holding ``denoiser`` and ``after_denoiser``) inside ``blocks``."""
    subs = getattr(blocks, "sub_blocks", {})
    if "denoiser" in subs and "after_denoiser" in subs:
        return blocks
    for name in ("denoise", *subs.keys()):
        if name in subs:
            found = _find_loop(subs[name])
            if found is not None:
                return found
    return None


def add_to_modular_sdxl(blocks: Any, guidance: CLIPGuidance) -> Any:
    """Insert a ``CLIPGuidanceLoopStep`` before the scheduler step of the text-to-image loop.

    ``blocks``: e.g. ``StableDiffusionXLAutoBlocks()``, before ``init_pipeline``. Returns the loop.
    """
    _check_guidance(guidance)  # cheap checks first
    loop = _find_loop(blocks) if hasattr(blocks, "sub_blocks") else None
    if loop is None:
        hint = (
            " (a pipeline: pass its blocks before init_pipeline)"
            if hasattr(blocks, "blocks")
            else ""
        )
        raise ValueError(
            f"blocks={describe_object(blocks)} is not valid{hint}; accepted: modular SDXL blocks (e.g. "
            "StableDiffusionXLAutoBlocks()) holding a denoise loop with 'denoiser' and "
            "'after_denoiser' steps"
        )
    if "clip_guidance" in loop.sub_blocks:
        raise ValueError(
            f"blocks={describe_object(blocks)} already holds a 'clip_guidance' step; add guidance once "
            "(for another setting, build the blocks again)"
        )
    index = list(loop.sub_blocks).index("after_denoiser")
    loop.sub_blocks.insert("clip_guidance", CLIPGuidanceLoopStep(guidance), index)
    return loop
