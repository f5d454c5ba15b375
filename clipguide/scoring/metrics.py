"""Scoring maths as pure tensor functions: cosine per pair and as a matrix, per-sample
CLIPScore, ranking. No model: the embeddings come from any CLIP."""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = [
    "CLIPSCORE_SCALE",
    "HESSEL_SCALE",
    "normalise",
    "cosine",
    "cosine_matrix",
    "clip_score",
    "rank",
    "Ranking",
]

CLIPSCORE_SCALE = 100.0
"""The scale torchmetrics' ``CLIPScore`` uses. torchmetrics computes ``100 * cos`` per sample and
clamps only the batch mean, ``max(mean(100 * cos), 0)``; :func:`clip_score` clamps each sample,
``100 * max(cos, 0)`` (Hessel et al.), so the two agree whenever no cosine is negative."""
HESSEL_SCALE = 2.5
"""Hessel et al. 2021, "CLIPScore", eq. 1: w = 2.5."""


def normalise(x: torch.Tensor) -> torch.Tensor:
    """Rows scaled to unit length, in fp32 (a zero row stays zero)."""
    x = x.float()
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def cosine(image_embeds: torch.Tensor, text_embeds: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of each pair of rows, in fp32: (N, D), (N, D) or (D,) -> (N,)."""
    if image_embeds.ndim != 2 or text_embeds.ndim not in (1, 2):
        raise ValueError(
            f"image_embeds must be (N, D) and text_embeds (N, D) or (D,), got shapes "
            f"{tuple(image_embeds.shape)} and {tuple(text_embeds.shape)}"
        )
    if text_embeds.ndim == 2 and text_embeds.shape[0] not in (1, image_embeds.shape[0]):
        raise ValueError(
            f"text_embeds must have 1 or N={image_embeds.shape[0]} rows, got {text_embeds.shape[0]}"
        )
    return (normalise(image_embeds) * normalise(text_embeds)).sum(dim=-1)


def cosine_matrix(image_embeds: torch.Tensor, text_embeds: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of every image with every text, in fp32: (N, D), (M, D) -> (N, M)."""
    if image_embeds.ndim != 2 or text_embeds.ndim != 2:
        raise ValueError(
            f"image_embeds and text_embeds must be 2-D (N, D) and (M, D), got shapes "
            f"{tuple(image_embeds.shape)} and {tuple(text_embeds.shape)}"
        )
    return normalise(image_embeds) @ normalise(text_embeds).T


def clip_score(cos: torch.Tensor, scale: float = CLIPSCORE_SCALE) -> torch.Tensor:
    """CLIPScore per sample, ``scale * max(cos, 0)`` (Hessel et al. 2021; clamped per sample,
    where torchmetrics clamps the batch mean)."""
    if scale <= 0:
        raise ValueError(f"scale must be positive (100 or {HESSEL_SCALE}), got {scale}")
    return scale * cos.float().clamp_min(0.0)


@dataclass(frozen=True)
class Ranking:
    """Indices into the ranked inputs, best first, and their scores in the same order."""

    indices: list[int]
    scores: torch.Tensor


def rank(scores: torch.Tensor) -> Ranking:
    """Sort scores best first; ties keep input order (lower index first), NaN goes last."""
    if scores.ndim != 1:
        raise ValueError(f"scores must be 1-D, got shape {tuple(scores.shape)}")
    values = scores.detach().float().cpu()
    keys = torch.nan_to_num(values, nan=-float("inf"))
    order = torch.sort(keys, descending=True, stable=True).indices
    return Ranking(indices=order.tolist(), scores=scores[order.to(scores.device)])
