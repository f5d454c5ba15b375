"""Differentiable decoding of predicted latents for guidance, with device/dtype borrowing."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

__all__ = ["decode_latents", "decoder_factor", "decoder_ready", "latent_side_for", "shrink_latents"]


def _module_device(module: Any) -> torch.device | None:
    if isinstance(module, torch.nn.Module):
        for p in module.parameters():
            return p.device
    return None


def shrink_latents(latents: torch.Tensor, size: int | None) -> torch.Tensor:
    """Latents resized (area-averaged, differentiable) so the shorter side is ``size``."""
    h, w = latents.shape[-2:]
    if size is None or min(h, w) <= size:
        return latents
    scale = size / min(h, w)
    new = (max(1, round(h * scale)), max(1, round(w * scale)))
    return torch.nn.functional.interpolate(latents, size=new, mode="area")


def decoder_factor(decoder: Any) -> int | None:
    """Image pixels per latent pixel of ``decoder``, or None where it cannot be read.

    Diffusers autoencoders from their configs (``AutoencoderKL``: one 2x step between
    consecutive ``block_out_channels``, as the pipelines compute ``vae_scale_factor``;
    ``AutoencoderTiny``: ``upsampling_scaling_factor`` per decoder block but the last); other
    decoders from an int ``factor`` attribute (``LinearLatentDecoder``).
    """
    cfg = getattr(decoder, "config", None)
    tiny = getattr(cfg, "decoder_block_out_channels", None)
    if tiny is not None:
        return int(cfg.upsampling_scaling_factor) ** (len(tiny) - 1)
    blocks = getattr(cfg, "block_out_channels", None)
    if blocks is not None:
        return 2 ** (len(blocks) - 1)
    factor = getattr(decoder, "factor", None)
    return factor if isinstance(factor, int) and not isinstance(factor, bool) else None


def latent_side_for(pixels: int, factor: int | None) -> int | None:
    """The fewest latent pixels whose decode has at least ``pixels`` image pixels (None when the
    decoder's factor is unknown: decode at full size)."""
    return None if factor is None else -(-pixels // factor)


def decode_latents(decoder: Any, latents: torch.Tensor) -> torch.Tensor:
    """Differentiable decode of scaled latents to float32 images in [0, 1].

    ``decoder``: a diffusers autoencoder (``AutoencoderKL``, ``AutoencoderTiny``: its own
    ``config.scaling_factor``, ``shift_factor``, ``latents_mean/std`` are applied, as the
    pipelines do before ``decode``) or a callable mapping latents to images in [-1, 1].
    """
    if hasattr(decoder, "decode"):
        cfg = decoder.config
        z = latents
        mean, std = getattr(cfg, "latents_mean", None), getattr(cfg, "latents_std", None)
        if mean is not None and std is not None:
            shape = (1, -1) + (1,) * (z.dim() - 2)
            z = z * z.new_tensor(std).view(shape) / cfg.scaling_factor + z.new_tensor(mean).view(
                shape
            )
        else:
            z = z / cfg.scaling_factor
            if getattr(cfg, "shift_factor", None) is not None:
                z = z + cfg.shift_factor
        dtype = next(decoder.parameters()).dtype
        images = decoder.decode(z.to(dtype)).sample
    else:
        images = decoder(latents)
    return (images.float() / 2 + 0.5).clamp(0, 1)


@contextlib.contextmanager
def decoder_ready(
    decoder: Any, device: torch.device, *, checkpointing: bool = False
) -> Iterator[Any]:
    """The decoder on ``device`` (fp32 if it needs upcasting), restored after the backward.

    Under model CPU offload the pipeline keeps the VAE on the CPU during the loop, so it is
    borrowed; the SDXL VAE overflows in fp16 (``config.force_upcast``), so it is decoded in
    fp32 as the pipeline does. Both changes are undone (fp16 -> fp32 -> fp16 is lossless).
    """
    home = _module_device(decoder)
    moved = home is not None and home != device
    upcast = getattr(getattr(decoder, "config", None), "force_upcast", False) and (
        isinstance(decoder, torch.nn.Module) and decoder.dtype == torch.float16
    )
    use_ckpt = checkpointing and hasattr(decoder, "enable_gradient_checkpointing")
    use_ckpt = use_ckpt and not getattr(decoder, "is_gradient_checkpointing", False)
    try:
        if moved:
            decoder.to(device)
        if upcast:
            decoder.to(torch.float32)
        if use_ckpt:
            decoder.enable_gradient_checkpointing()
        yield decoder
    finally:
        if use_ckpt:
            decoder.disable_gradient_checkpointing()
        if upcast:
            decoder.to(torch.float16)
        if moved:
            decoder.to(home)
