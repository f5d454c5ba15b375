"""Noise levels and x0 prediction for diffusers schedulers, dispatched on their parameterisation.

Every supported scheduler is reduced to one form: the (unscaled) latents are
``x = alpha * x0 + sigma * eps`` and the model sees ``input_scale * x``. From there the model
output of any ``prediction_type`` converts to (x0, eps) and back with a few lines of algebra.

- sigma-type (variance exploding, Karras et al. 2022): ``init_noise_sigma > 1``, ``alpha = 1``,
  ``sigma = sigmas[i]``, model input scaled by ``1 / sqrt(sigma^2 + 1)`` (Euler, Euler ancestral,
  Heun, KDPM2, LMS, DPM++ SDE).
- VP (variance preserving, Ho et al. 2020): ``alpha = sqrt(alpha_bar)``, ``sigma = sqrt(1 - alpha_bar)``
  from ``alphas_cumprod[t]`` (DDIM, DDPM, PNDM), or from the VP sigma ``sigmas[i]`` where the
  scheduler indexes its own sigma table (DPM-Solver, UniPC, DEIS).
- flow matching (Lipman et al. 2023): ``alpha = 1 - s``, ``sigma = s``, output is the velocity
  ``eps - x0`` (FlowMatchEuler, and DPM-Solver/UniPC with ``use_flow_sigmas``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

__all__ = [
    "NoiseLevel",
    "parameterisation",
    "noise_level",
    "step_position",
    "EvaluationCounter",
    "split_model_output",
    "predict_x0",
    "output_change_from_eps",
]

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample", "flow_prediction")

# Attributes that mean a preconditioning this module does not model (EDM c_skip/c_out,
# consistency-model boundary scalings on a sigma schedule): such schedulers get a clear error
# instead of wrong maths. LCMScheduler is not among them (its method is
# ``get_scalings_for_boundary_condition_discrete``): its x0 is the VP formula and its boundary
# scalings leave it as is to within 0.25 % at every timestep >= 1 (c_skip = 0.25 / ((10 t)^2 +
# 0.25)), so guidance and placement treat it as a VP scheduler (tested against its ``denoised``).
_UNSUPPORTED_MARKERS = ("precondition_outputs", "get_scalings_for_boundary_condition")


@dataclass(frozen=True)
class NoiseLevel:
    """Noise level of one model evaluation: ``x = alpha*x0 + sigma*eps``, model input ``input_scale*x``."""

    alpha: float
    sigma: float
    input_scale: float
    prediction_type: str
    kind: str  # "sigma", "vp" or "flow"


def _unsupported(scheduler: Any, why: str) -> ValueError:
    return ValueError(
        f"scheduler {type(scheduler).__name__} is not supported by clipguide guidance: {why}. "
        "Supported parameterisations: sigma-type (Euler, Euler ancestral, Heun, KDPM2, LMS), "
        "VP (DDIM, DDPM, PNDM, DPM-Solver, UniPC, DEIS, LCM) and flow matching (FlowMatchEuler)."
    )


def parameterisation(scheduler: Any) -> str:
    """``"sigma"``, ``"vp"`` or ``"flow"``; a ValueError naming the scheduler if unsupported."""
    for marker in _UNSUPPORTED_MARKERS:
        if hasattr(scheduler, marker):
            raise _unsupported(scheduler, f"it uses its own preconditioning ({marker})")
    config = getattr(scheduler, "config", {})
    has_sigmas = getattr(scheduler, "sigmas", None) is not None
    if config.get("use_flow_sigmas", False) and has_sigmas:
        return "flow"
    if has_sigmas and float(getattr(scheduler, "init_noise_sigma", 1.0)) > 1.0:
        return "sigma"
    if getattr(scheduler, "alphas_cumprod", None) is not None:
        return "vp"
    if has_sigmas and "shift" in config:
        return "flow"
    raise _unsupported(
        scheduler, "it has neither a sigma table, alphas_cumprod nor a flow schedule"
    )


def _index(scheduler: Any, timestep: Any) -> int:
    """Index into ``scheduler.sigmas`` of the evaluation about to happen (before ``step``)."""
    idx = getattr(scheduler, "step_index", None)
    if idx is not None:
        return int(idx)
    begin = getattr(scheduler, "begin_index", None)
    if begin is not None:
        return int(begin)
    if hasattr(scheduler, "index_for_timestep"):
        timestep = torch.as_tensor(timestep, device=scheduler.timesteps.device)
        return int(scheduler.index_for_timestep(timestep))
    return _first_match(scheduler, timestep)


def _first_match(scheduler: Any, timestep: Any) -> int:
    timesteps = scheduler.timesteps
    hits = (timesteps == torch.as_tensor(timestep, device=timesteps.device)).nonzero()
    if len(hits) == 0:
        raise ValueError(
            f"timestep {float(timestep)} is not in {type(scheduler).__name__}.timesteps; "
            "call scheduler.set_timesteps first"
        )
    return int(hits[0])


def step_position(scheduler: Any, timestep: Any) -> tuple[int, int]:
    """(position of the evaluation at ``timestep`` in ``scheduler.timesteps``, their number).

    The position is the scheduler's ``step_index`` where it keeps one, else the first entry equal
    to ``timestep``. Timesteps can repeat (PNDM evaluates some twice), so within a sampling run
    count the evaluations with :class:`EvaluationCounter` instead; this gives where a run starts.
    """
    total = len(scheduler.timesteps)
    if hasattr(scheduler, "step_index"):
        return min(_index(scheduler, timestep), total - 1), total
    return _first_match(scheduler, timestep), total


def _same_timestep(a: Any, b: Any) -> bool:
    x = float(torch.as_tensor(a).reshape(-1)[0])
    y = float(torch.as_tensor(b).reshape(-1)[0])
    return math.isclose(x, y, rel_tol=1e-3, abs_tol=1e-3)  # fp16 timesteps round


class EvaluationCounter:
    """Position of each model evaluation in a sampling run, counted, whatever the scheduler.

    Pipelines evaluate the model once per entry of ``scheduler.timesteps`` (twice per step for
    Heun and KDPM2, whose tables hold both evaluations; PNDM repeats timesteps), so the k-th
    evaluation of a run is entry ``start + k``, where ``start`` is 0 for text-to-image and the
    strength offset for image-to-image. A run starts after :meth:`start_run` (called when the
    pipeline encodes its prompt), when ``set_timesteps`` has made a new table, or when the table
    is used up. If the counted entry does not hold the timestep the model sees (an evaluation
    was skipped or repeated, or counting began mid-run), the position is looked up again.
    """

    def __init__(self) -> None:
        self._timesteps: Any = None
        self._next = 0
        self._pending = True

    def start_run(self) -> None:
        """The next evaluation is the first of a new run."""
        self._pending = True

    def advance(self, scheduler: Any, timestep: Any) -> tuple[int, int, bool]:
        """(position, number of evaluations, whether this evaluation starts a run)."""
        timesteps = scheduler.timesteps
        total = len(timesteps)
        new = self._pending or timesteps is not self._timesteps or self._next >= total
        if new:
            self._pending, self._timesteps = False, timesteps
            try:
                self._next = step_position(scheduler, timestep)[0]
            except ValueError:  # a timestep the table does not hold: count from the start
                self._next = 0
        elif not _same_timestep(timesteps[self._next], timestep):
            try:
                self._next = step_position(scheduler, timestep)[0]
            except ValueError:  # a timestep outside the table: trust the count
                pass
        position = self._next
        self._next += 1
        return position, total, new


def _prediction_type(scheduler: Any, kind: str) -> str:
    ptype = getattr(scheduler, "config", {}).get("prediction_type", None)
    if ptype is None:
        ptype = "flow_prediction" if kind == "flow" else "epsilon"
    if ptype not in PREDICTION_TYPES:
        raise _unsupported(scheduler, f"prediction_type {ptype!r} (accepted: {PREDICTION_TYPES})")
    return ptype


def _model_sigma(scheduler: Any, timestep: Any) -> float:
    """Sigma the model is evaluated at, read from the scheduler's own input scaling.

    ``scale_model_input`` divides by ``sqrt(sigma^2 + 1)`` at the sigma of the coming evaluation,
    including the doubled/interpolated evaluations of Heun and KDPM2, so probing it with ones
    gives that sigma without knowing each scheduler's table layout. Side effect: as in a
    pipeline, it initialises ``step_index`` when unset.
    """
    device = scheduler.sigmas.device
    scale = scheduler.scale_model_input(torch.ones(1, dtype=torch.float64, device=device), timestep)
    return math.sqrt(max(1.0 / float(scale) ** 2 - 1.0, 0.0))


def noise_level(scheduler: Any, timestep: Any) -> NoiseLevel:
    """The noise level at which the model is evaluated for ``timestep``, from the scheduler's state."""
    kind = parameterisation(scheduler)
    ptype = _prediction_type(scheduler, kind)
    if kind == "vp" and getattr(scheduler, "sigmas", None) is None:
        t = int(torch.as_tensor(timestep).reshape(-1)[0])
        alpha_bar = float(scheduler.alphas_cumprod[t])
        return NoiseLevel(math.sqrt(alpha_bar), math.sqrt(1.0 - alpha_bar), 1.0, ptype, kind)
    if kind == "sigma":
        s = _model_sigma(scheduler, timestep)
        return NoiseLevel(1.0, s, 1.0 / math.sqrt(s * s + 1.0), ptype, kind)
    s = float(scheduler.sigmas[_index(scheduler, timestep)])
    if kind == "flow":
        return NoiseLevel(1.0 - s, s, 1.0, ptype, kind)
    alpha = 1.0 / math.sqrt(s * s + 1.0)  # VP sigma table: s = sigma_t / alpha_t
    return NoiseLevel(alpha, s * alpha, 1.0, ptype, kind)


def split_model_output(
    output: torch.Tensor, sample: torch.Tensor, level: NoiseLevel
) -> tuple[torch.Tensor, torch.Tensor]:
    """(x0, eps) implied by a model output at ``level`` for the unscaled latents ``sample``."""
    a, b, ptype = level.alpha, level.sigma, level.prediction_type
    if ptype == "epsilon":
        eps = output
        x0 = (sample - b * eps) / a
    elif ptype == "sample":
        x0 = output
        eps = (sample - a * x0) / b
    elif ptype == "v_prediction":
        # v = a' eps - b' x0 on the normalised input (a', b') = (a, b) / sqrt(a^2 + b^2)
        # (Salimans & Ho 2022); for sigma-type this is the scaled model input.
        norm = math.sqrt(a * a + b * b)
        an, bn, xn = a / norm, b / norm, sample / norm
        x0 = an * xn - bn * output
        eps = bn * xn + an * output
    elif ptype == "flow_prediction":
        # v = eps - x0 with x = a x0 + b eps  =>  x = (a + b) x0 + b v
        x0 = (sample - b * output) / (a + b)
        eps = output + x0
    else:
        raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {ptype!r}")
    return x0, eps


def predict_x0(
    scheduler: Any, sample: torch.Tensor, model_output: torch.Tensor, timestep: Any
) -> torch.Tensor:
    """Predicted clean latents for ``model_output`` at ``timestep``; call before ``scheduler.step``.

    ``sample`` is the unscaled latents (what ``scheduler.step`` receives), not the model input.
    """
    return split_model_output(model_output, sample, noise_level(scheduler, timestep))[0]


def output_change_from_eps(delta_eps: torch.Tensor, level: NoiseLevel) -> torch.Tensor:
    """Change of the model output that changes the implied eps by ``delta_eps`` at fixed latents."""
    a, b, ptype = level.alpha, level.sigma, level.prediction_type
    if ptype == "epsilon":
        return delta_eps
    if ptype == "sample":
        return delta_eps * (-b / a)
    if ptype == "v_prediction":
        return delta_eps * (math.sqrt(a * a + b * b) / a)
    if ptype == "flow_prediction":
        return delta_eps * ((a + b) / a)
    raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {ptype!r}")
