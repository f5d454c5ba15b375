"""Samplers by name, for any diffusers model: ``--scheduler NAME`` builds the named class from
the pipeline's own scheduler config (its noise schedule kept, the sampler changed)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["SCHEDULERS", "scheduler_class", "scheduler_from_config"]

SCHEDULERS = ("euler", "euler_a", "heun", "ddim", "ddpm", "dpm", "unipc", "lms")


def _classes() -> dict[str, Any]:
    import diffusers as d

    return {
        "euler": d.EulerDiscreteScheduler,
        "euler_a": d.EulerAncestralDiscreteScheduler,
        "heun": d.HeunDiscreteScheduler,
        "ddim": d.DDIMScheduler,
        "ddpm": d.DDPMScheduler,
        "dpm": d.DPMSolverMultistepScheduler,
        "unipc": d.UniPCMultistepScheduler,
        "lms": d.LMSDiscreteScheduler,
    }


def scheduler_class(name: str) -> Any:
    """The diffusers scheduler class called ``name`` (one of :data:`SCHEDULERS`)."""
    if not isinstance(name, str) or name not in SCHEDULERS:
        raise ValueError(f"scheduler={name!r} is not one of {SCHEDULERS}")
    return _classes()[name]


def scheduler_from_config(name: str, config: Mapping[str, Any]) -> Any:
    """The scheduler ``name`` built from another scheduler's ``config``."""
    return scheduler_class(name).from_config(config)
