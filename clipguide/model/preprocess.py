"""Image preprocessing that travels with a CLIP model (size, mean/std, interpolation).

Two paths with one config: PIL images go through torchvision's PIL transforms exactly as
open_clip's ``preprocess`` does; float tensors go through a differentiable torch version
(antialiased resize of the shortest side, centre crop, normalise) for guidance.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.transforms import v2 as T
from torchvision.transforms.functional import InterpolationMode

__all__ = ["Preprocess", "OPENAI_MEAN", "OPENAI_STD"]

# open_clip's OPENAI_DATASET_MEAN/STD: the default when a source states no preprocessing
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)

_INTERPOLATIONS = ("bicubic", "bilinear", "nearest")
_RESIZE_MODES = ("shortest", "squash")


@dataclasses.dataclass(frozen=True)
class Preprocess:
    """CLIP input preprocessing, as in open_clip's pretrained registry entries."""

    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"
    resize_mode: str = "shortest"

    def __post_init__(self) -> None:
        if self.interpolation not in _INTERPOLATIONS:
            raise ValueError(
                f"interpolation={self.interpolation!r} is not supported; use one of {_INTERPOLATIONS}"
            )
        if self.resize_mode not in _RESIZE_MODES:
            raise ValueError(
                f"resize_mode={self.resize_mode!r} is not supported; use one of {_RESIZE_MODES}"
            )
        if not (isinstance(self.image_size, int) and self.image_size > 0):
            raise ValueError(f"image_size must be a positive int, got {self.image_size!r}")

    @classmethod
    def from_dict(cls, cfg: Mapping, image_size: int | Sequence[int]) -> Preprocess:
        """Build from an open_clip-style ``preprocess_cfg`` / pretrained entry."""
        size = cfg.get("size", image_size)
        if not isinstance(size, int):
            size = int(size[0])
        return cls(
            image_size=size,
            mean=tuple(float(x) for x in cfg["mean"]),  # type: ignore[arg-type]
            std=tuple(float(x) for x in cfg["std"]),  # type: ignore[arg-type]
            interpolation=cfg.get("interpolation", "bicubic"),
            resize_mode=cfg.get("resize_mode", "shortest"),
        )

    def to_dict(self) -> dict:
        return {
            "size": self.image_size,
            "mean": list(self.mean),
            "std": list(self.std),
            "interpolation": self.interpolation,
            "resize_mode": self.resize_mode,
        }

    # -- PIL path (bit-compatible with open_clip's preprocess) -------------------------------
    def pil_transform(self, normalize: bool = True) -> T.Compose:
        """torchvision transform for RGB PIL images (same ops as open_clip's ``preprocess``)."""
        return _pil_transform(self, normalize)

    def from_pil(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """Stack RGB PIL images into a normalised (N, 3, S, S) float32 batch."""
        return self.from_uint8(torch.stack([self.crop_uint8(img) for img in images]))

    def crop_uint8(self, image: Image.Image) -> torch.Tensor:
        """The resized, centre-cropped (3, S, S) uint8 pixels of an RGB PIL image: the CPU
        half of :meth:`from_pil`, a quarter of the float batch's bytes to ship to a model."""
        return _pil_crop(self)(image)

    def from_uint8(self, pixels: torch.Tensor) -> torch.Tensor:
        """The normalised float32 batch of (N, 3, S, S) uint8 crops (:meth:`crop_uint8`)."""
        return self.normalize(T.ToDtype(torch.float32, scale=True)(pixels))

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """(x - mean) / std over the channel axis of an (N, 3, H, W) batch in [0, 1]."""
        mean = x.new_tensor(self.mean).view(1, 3, 1, 1)
        std = x.new_tensor(self.std).view(1, 3, 1, 1)
        return (x - mean) / std

    # -- differentiable tensor path ------------------------------------------------------------
    def from_tensor(self, x: torch.Tensor) -> torch.Tensor:
        """Differentiable resize/crop/normalise of a float (N, 3, H, W) batch in [0, 1]."""
        size = self.image_size
        h, w = x.shape[-2:]
        if self.resize_mode == "shortest":
            scale = size / min(h, w)
            new = (max(size, round(h * scale)), max(size, round(w * scale)))
        else:
            new = (size, size)
        if new != (h, w):
            x = F.interpolate(
                x,
                size=new,
                mode=self.interpolation,
                antialias=self.interpolation != "nearest",
                align_corners=False if self.interpolation != "nearest" else None,
            )
        top, left = (x.shape[-2] - size) // 2, (x.shape[-1] - size) // 2
        return self.normalize(x[..., top : top + size, left : left + size])


@functools.lru_cache(maxsize=16)
def _pil_crop(pre: Preprocess) -> T.Compose:
    mode = InterpolationMode(pre.interpolation)
    size = pre.image_size
    resize = (
        T.Resize(size, interpolation=mode)
        if pre.resize_mode == "shortest"
        else T.Resize((size, size), interpolation=mode)
    )
    return T.Compose([resize, T.CenterCrop(size), T.PILToTensor()])


@functools.lru_cache(maxsize=16)
def _pil_transform(pre: Preprocess, normalize: bool) -> T.Compose:
    ops = [*_pil_crop(pre).transforms, T.ToDtype(torch.float32, scale=True)]
    if normalize:
        ops.append(T.Normalize(pre.mean, pre.std))
    return T.Compose(ops)
