"""Stage ``vae``: a small AutoencoderKL (4x downsampling, 4 latent channels) on scenes."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import torch

from clipguide.shapes.shipped import WEIGHTS_DIR

from .common import begin_step, optimiser_step, psnr, resume, to_unit
from .data import build_pool

__all__ = ["VAE_CONFIG", "build_vae", "train_vae"]

log = logging.getLogger(__name__)

VAE_CONFIG = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 3,
    up_block_types=("UpDecoderBlock2D",) * 3,
    block_out_channels=(16, 32, 64),
    layers_per_block=1,
    latent_channels=4,
    norm_num_groups=8,
    sample_size=64,
    force_upcast=False,
)


def build_vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(**VAE_CONFIG)


def train_vae(args: argparse.Namespace) -> None:
    """L1 + L2 reconstruction with a tiny KL term (as in LDM's KL-f autoencoders)."""
    torch.manual_seed(args.seed)
    vae = build_vae()
    log.warning("vae: %.3f M params", sum(p.numel() for p in vae.parameters()) / 1e6)
    pool = build_pool(args.pool, args.seed, cache_dir=Path(args.run_dir).parent / "pools")
    held = build_pool(256, args.seed + 1000)
    opt, ckpt, step = resume(vae, args, weight_decay=0.0)
    vae.train()
    t0 = time.monotonic()
    while step < args.steps:
        g = begin_step(opt, step, args)
        x = to_unit(pool.images[torch.randint(len(pool), (args.batch,), generator=g)])
        post = vae.encode(x).latent_dist
        z = post.mean + post.std * torch.randn(post.mean.shape, generator=g)
        rec = vae.decode(z).sample
        loss = (rec - x).abs().mean() + (rec - x).pow(2).mean() + 1e-6 * post.kl().mean()
        step = optimiser_step(vae, opt, loss, step, args.steps, ckpt, t0)
    vae.eval()
    with torch.no_grad():
        x = to_unit(held.images)
        z = vae.encode(x).latent_dist.mean
        scaling = float(1.0 / z.std())
        log.warning(
            "held-out PSNR %.2f dB; latent std %.4f", psnr(vae.decode(z).sample, x), 1 / scaling
        )
    vae.register_to_config(scaling_factor=round(scaling, 5))
    out = Path(args.out or WEIGHTS_DIR / "vae")
    vae.to(torch.float16).save_pretrained(out, safe_serialization=True)
    log.warning("exported %s", out)
