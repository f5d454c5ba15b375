"""Robust re-scoring: scores of perturbed views of each image (JPEG, crop, grayscale)."""

from __future__ import annotations

import io
from dataclasses import dataclass

import torch
from PIL import Image

__all__ = ["RobustScores", "ROBUST_VIEWS", "robust_view"]

ROBUST_VIEWS = ("jpeg", "crop", "grayscale")


@dataclass(frozen=True)
class RobustScores:
    """Scores of the clean images and of each perturbed view (JPEG, crop, grayscale)."""

    clean: torch.Tensor
    jpeg: torch.Tensor
    crop: torch.Tensor
    grayscale: torch.Tensor

    @property
    def worst(self) -> torch.Tensor:
        """The lowest score of each image over the clean image and all views."""
        return torch.stack([self.clean, self.jpeg, self.crop, self.grayscale]).amin(dim=0)

    def as_dict(self) -> dict[str, torch.Tensor]:
        return {
            "clean": self.clean,
            "jpeg": self.jpeg,
            "crop": self.crop,
            "grayscale": self.grayscale,
        }


def _to_pil(item: Image.Image | torch.Tensor) -> Image.Image:
    if isinstance(item, Image.Image):
        return item
    array = (item.detach().float().clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu()
    return Image.fromarray(array.numpy(), mode="RGB")


def robust_view(image: Image.Image | torch.Tensor, view: str) -> Image.Image:
    """Perturb an RGB image: ``jpeg`` (quality 75), ``crop`` (centre 90% resized back), ``grayscale``."""
    pil = _to_pil(image)
    if view == "jpeg":
        buffer = io.BytesIO()
        pil.save(buffer, format="JPEG", quality=75)
        buffer.seek(0)
        with Image.open(buffer) as decoded:
            return decoded.convert("RGB")
    if view == "crop":
        width, height = pil.size
        w, h = max(1, round(0.9 * width)), max(1, round(0.9 * height))
        left, top = (width - w) // 2, (height - h) // 2
        return pil.crop((left, top, left + w, top + h)).resize((width, height), Image.BICUBIC)
    if view == "grayscale":
        return pil.convert("L").convert("RGB")
    raise ValueError(f"view must be one of {ROBUST_VIEWS}, got {view!r}")
