"""Views of a decoded image and the spherical-distance loss to a target CLIP embedding."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["make_views", "spherical_distance"]


def _square_resize(images: torch.Tensor, size: int) -> torch.Tensor:
    return F.interpolate(
        images, size=(size, size), mode="bilinear", antialias=True, align_corners=False
    )


def make_views(
    images: torch.Tensor,
    count: int,
    size: int,
    *,
    min_crop: float = 0.6,
    flip: bool = True,
    noise: float = 0.02,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``count`` differentiable square views of each image, resized to ``size``.

    ``count == 1`` is the plain CLIP view: the centre square, resized. Otherwise each view is a
    random square crop (side between ``min_crop`` and 1 of the shorter side), flipped with
    probability 1/2, plus Gaussian noise of std ``noise`` (cutouts as in Crowson's CLIP-guided
    diffusion). Returns ``(count * B, C, size, size)``, view-major: row ``v * B + b``.
    """
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    b, _, h, w = images.shape
    side = min(h, w)
    if count == 1:
        top, left = (h - side) // 2, (w - side) // 2
        return _square_resize(images[:, :, top : top + side, left : left + side], size)
    cpu = torch.device("cpu")
    sides = (
        side * (min_crop + (1 - min_crop) * torch.rand(count, generator=generator, device=cpu))
    ).long()
    sides = sides.clamp(1, side)
    offsets = torch.rand(count, 2, generator=generator, device=cpu)
    flips = torch.rand(count, generator=generator, device=cpu) < 0.5
    views = []
    for v in range(count):
        s = int(sides[v])
        top = int(offsets[v, 0] * (h - s + 1))
        left = int(offsets[v, 1] * (w - s + 1))
        view = _square_resize(images[:, :, top : top + s, left : left + s], size)
        if flip and bool(flips[v]):
            view = view.flip(-1)
        views.append(view)
    out = torch.cat(views)
    if noise > 0:
        eps = torch.randn(out.shape, generator=generator, device=cpu, dtype=torch.float32)
        out = out + noise * eps.to(device=out.device, dtype=out.dtype)
    return out


def spherical_distance(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Half the squared great-circle angle between the directions of x and y, in fp32, per row.

    ``2 * arcsin(|x - y| / 2)^2`` for unit vectors (the loss of Crowson's CLIP-guided diffusion);
    it equals ``theta^2 / 2`` for the angle ``theta`` and is smooth where the cosine saturates.
    """
    x = F.normalize(x.float(), dim=-1)
    y = F.normalize(y.float(), dim=-1)
    half_chord = (x - y).norm(dim=-1).div(2).clamp(max=1.0)
    return half_chord.arcsin().pow(2).mul(2)
