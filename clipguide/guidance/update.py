"""Turn a latent-space loss gradient into a change of the predicted noise."""

from __future__ import annotations

import torch

__all__ = ["eps_change"]


def _per_sample_norm(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1).norm(dim=1).view(-1, *([1] * (x.dim() - 1)))


def eps_change(
    grad: torch.Tensor,
    sigma: float,
    scale: float,
    *,
    reference: torch.Tensor | None = None,
    max_rms: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Change of eps for loss gradient ``grad = dL/dx`` at noise ``sigma``: ``scale * sigma * grad``.

    This is classifier guidance (Dhariwal & Nichol 2021) with the loss as ``-log p(y|x)``:
    ``eps' = eps + sigma * grad L`` moves the predicted x0 down the loss while the scheduler
    steps as usual. With ``reference`` (per-sample, e.g. the classifier-free-guidance correction
    in eps form) the change is rescaled per sample to ``scale * |reference|``, so ``scale`` is a
    fraction of the CFG push. ``max_rms`` caps the per-sample RMS of the change. Samples whose
    gradient is not finite get a zero change.

    Returns:
        (delta_eps, finite) where ``finite`` is a bool per sample.
    """
    grad = grad.float()
    finite = torch.isfinite(grad.flatten(1)).all(dim=1)
    mask = finite.view(-1, *([1] * (grad.dim() - 1)))
    delta = torch.where(mask, grad, torch.zeros_like(grad)) * sigma
    if reference is not None:
        ref_norm = _per_sample_norm(reference.float())
        delta = delta * (ref_norm / _per_sample_norm(delta).clamp_min(1e-12))
    delta = delta * scale
    if max_rms is not None:
        rms = delta.flatten(1).pow(2).mean(1).sqrt().view_as(_per_sample_norm(delta))
        delta = delta * (max_rms / rms.clamp_min(1e-12)).clamp(max=1.0)
    return delta, finite
