"""A near-free differentiable stand-in for a VAE decoder: latents -> RGB by one affine map.

Guidance only needs an image good enough for CLIP to judge colours, layout and rough shapes;
a per-pixel affine map from latent channels to RGB (fitted by least squares to the real
decoder on sample images), upsampled to image size, gives that at almost no cost.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["LinearLatentDecoder", "affine_design"]


class LinearLatentDecoder(torch.nn.Module):
    """``latents -> images in [-1, 1]``: a 1x1 affine map to RGB, then bilinear upsampling."""

    def __init__(self, latent_channels: int = 4, factor: int = 8) -> None:
        super().__init__()
        for name, value in (("latent_channels", latent_channels), ("factor", factor)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name}={value!r} is not valid; accepted: an int >= 1")
        self.proj = torch.nn.Conv2d(latent_channels, 3, kernel_size=1)
        self.factor = int(factor)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        rgb = self.proj(latents.to(self.proj.weight.dtype))
        if self.factor == 1:
            return rgb
        return F.interpolate(rgb, scale_factor=self.factor, mode="bilinear", align_corners=False)

    @classmethod
    @torch.no_grad()
    def fit(cls, vae, images: torch.Tensor) -> LinearLatentDecoder:
        """Least-squares fit to ``vae`` on sample ``images`` (N, 3, H, W) in [0, 1].

        The latents are the encoder's means scaled as pipelines scale them, so the fitted map
        takes the same (scaled) latents as ``decode_latents``. The small solve runs on the CPU;
        the decoder is returned on the VAE's device.
        """
        if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] != 3:
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images)
            raise ValueError(f"images must be (N, 3, H, W) in [0, 1], got {shape}")
        param = next(vae.parameters())
        x = images.to(param.device, param.dtype) * 2 - 1
        z = vae.encode(x).latent_dist.mean.float()
        cfg = vae.config
        if getattr(cfg, "shift_factor", None) is not None:
            z = z - cfg.shift_factor
        z = z * cfg.scaling_factor
        factor = images.shape[-1] // z.shape[-1]
        target = F.avg_pool2d(x.float(), factor)  # the image at latent resolution, [-1, 1]
        a = affine_design(z)
        b = target.permute(0, 2, 3, 1).reshape(-1, 3)
        solution = torch.linalg.lstsq(a.cpu(), b.cpu()).solution  # (c + 1, 3)
        c = z.shape[1]
        decoder = cls(c, factor)
        decoder.proj.weight.copy_(solution[:c].T.reshape(3, c, 1, 1))
        decoder.proj.bias.copy_(solution[c])
        return decoder.to(param.device).requires_grad_(False).eval()


def affine_design(z: torch.Tensor) -> torch.Tensor:
    """Rows ``[z_pixel, 1]`` (N*H*W, C + 1) of latents (N, C, H, W), on ``z``'s device."""
    c = z.shape[1]
    rows = z.permute(0, 2, 3, 1).reshape(-1, c)
    return torch.cat([rows, rows.new_ones(rows.shape[0], 1)], 1)
