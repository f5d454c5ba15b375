"""Samplers by name, for any diffusers model: ``--scheduler NAME`` builds the named class from
the pipeline's own scheduler config (its noise schedule kept, the sampler changed).

``dpm++2m`` is DPM-Solver++ of order 2 (A1111's "DPM++ 2M"); a ``-karras`` suffix (or
``--karras``) spaces the sigmas as Karras et al. (2022) do, for the samplers that take it
(A1111's "DPM++ 2M Karras" is ``dpm++2m-karras``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = [
    "SCHEDULERS",
    "KARRAS",
    "scheduler_class",
    "scheduler_options",
    "scheduler_from_config",
    "with_karras",
]

_BASE = ("euler", "euler_a", "heun", "ddim", "ddpm", "dpm", "unipc", "lms", "dpm++2m")
KARRAS = ("euler", "heun", "dpm", "dpm++2m", "unipc", "lms")
"""The samplers with Karras sigmas (their diffusers class takes ``use_karras_sigmas``)."""
SCHEDULERS = _BASE + tuple(f"{name}-karras" for name in KARRAS)


def _classes() -> dict[str, Any]:
    import diffusers as d

    return {
        "euler": d.EulerDiscreteScheduler,
        "euler_a": d.EulerAncestralDiscreteScheduler,
        "heun": d.HeunDiscreteScheduler,
        "ddim": d.DDIMScheduler,
        "ddpm": d.DDPMScheduler,
        "dpm": d.DPMSolverMultistepScheduler,
        "dpm++2m": d.DPMSolverMultistepScheduler,
        "unipc": d.UniPCMultistepScheduler,
        "lms": d.LMSDiscreteScheduler,
    }


def _check(name: Any) -> str:
    if not isinstance(name, str) or name not in SCHEDULERS:
        raise ValueError(f"scheduler={name!r} is not one of {SCHEDULERS}")
    return name.removesuffix("-karras")


def scheduler_class(name: str) -> Any:
    """The diffusers scheduler class called ``name`` (one of :data:`SCHEDULERS`)."""
    return _classes()[_check(name)]


def scheduler_options(name: str) -> dict[str, Any]:
    """The config values the name sets on its class (the rest come from the model's config)."""
    options: dict[str, Any] = {}
    if _check(name) == "dpm++2m":
        options.update(algorithm_type="dpmsolver++", solver_order=2)
    if name.endswith("-karras"):
        options["use_karras_sigmas"] = True
    return options


def scheduler_from_config(name: str, config: Mapping[str, Any]) -> Any:
    """The scheduler ``name`` built from another scheduler's ``config``."""
    return scheduler_class(name).from_config(config, **scheduler_options(name))


def with_karras(scheduler: Any) -> Any:
    """``scheduler`` rebuilt with Karras sigmas; ``ValueError`` when its class has none."""
    import inspect

    cls = type(scheduler)
    if "use_karras_sigmas" not in inspect.signature(cls.__init__).parameters:
        raise ValueError(
            f"{cls.__name__} has no Karras sigmas; accepted with: {', '.join(KARRAS)} "
            "(--scheduler NAME)"
        )
    return cls.from_config(scheduler.config, use_karras_sigmas=True)
