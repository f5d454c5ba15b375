"""Views of a decoded image and the spherical-distance loss to a target CLIP embedding."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["ViewDraws", "make_views", "spherical_distance"]


def _square_resize(images: torch.Tensor, size: int) -> torch.Tensor:
    return F.interpolate(
        images, size=(size, size), mode="bilinear", antialias=True, align_corners=False
    )


class ViewDraws:
    """The random choices of one step's views for a batch of ``batch`` images, drawn once and
    applied to any rows of it, so decoding the batch in chunks draws what one pass would.

    ``count == 1`` draws nothing (the plain CLIP view). Otherwise the crops' sides, offsets
    and flips (one per view, shared by the images) are drawn here, and the views' Gaussian
    noise for the whole batch at the first :meth:`views` call, in the order of one pass.
    """

    def __init__(
        self,
        count: int,
        batch: int,
        *,
        min_crop: float = 0.6,
        flip: bool = True,
        noise: float = 0.02,
        generator: torch.Generator | None = None,
    ) -> None:
        if count < 1:
            raise ValueError(f"count must be >= 1, got {count}")
        self.count, self.batch, self.flip, self.noise = count, batch, flip, noise
        self.generator = generator
        self._noise: torch.Tensor | None = None
        if count > 1:
            cpu = torch.device("cpu")
            u = torch.rand(count, generator=generator, device=cpu)
            self.fractions = min_crop + (1 - min_crop) * u
            self.offsets = torch.rand(count, 2, generator=generator, device=cpu)
            self.flips = torch.rand(count, generator=generator, device=cpu) < 0.5

    def views(self, images: torch.Tensor, size: int, first: int = 0) -> torch.Tensor:
        """Views of ``images``, rows ``first ..`` of the batch: ``(count * b, C, size, size)``,
        view-major (row ``v * b + i``)."""
        b, c, h, w = images.shape
        side = min(h, w)
        if self.count == 1:
            top, left = (h - side) // 2, (w - side) // 2
            return _square_resize(images[:, :, top : top + side, left : left + side], size)
        sides = (side * self.fractions).long().clamp(1, side)
        views = []
        for v in range(self.count):
            s = int(sides[v])
            top = int(self.offsets[v, 0] * (h - s + 1))
            left = int(self.offsets[v, 1] * (w - s + 1))
            view = _square_resize(images[:, :, top : top + s, left : left + s], size)
            if self.flip and bool(self.flips[v]):
                view = view.flip(-1)
            views.append(view)
        out = torch.cat(views)
        if self.noise > 0:
            if self._noise is None:
                shape = (self.count * self.batch, c, size, size)
                cpu = torch.device("cpu")
                drawn = torch.randn(shape, generator=self.generator, device=cpu)
                self._noise = drawn.view(self.count, self.batch, c, size, size)
            eps = self._noise[:, first : first + b].reshape(out.shape)
            out = out + self.noise * eps.to(device=out.device, dtype=out.dtype)
        return out


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
    draws = ViewDraws(
        count, images.shape[0], min_crop=min_crop, flip=flip, noise=noise, generator=generator
    )
    return draws.views(images, size)


def spherical_distance(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Half the squared great-circle angle between the directions of x and y, in fp32, per row.

    ``2 * arcsin(|x - y| / 2)^2`` for unit vectors (the loss of Crowson's CLIP-guided diffusion);
    it equals ``theta^2 / 2`` for the angle ``theta`` and is smooth where the cosine saturates.
    """
    x = F.normalize(x.float(), dim=-1)
    y = F.normalize(y.float(), dim=-1)
    half_chord = (x - y).norm(dim=-1).div(2).clamp(max=1.0)
    return half_chord.arcsin().pow(2).mul(2)
