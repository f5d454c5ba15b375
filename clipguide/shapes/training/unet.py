"""Stage ``unet``: an SDXL-architecture UNet2DConditionModel on VAE latents of scenes.

Conditioning is SDXL's: cross-attention on the CLIP text tower's penultimate hidden states,
``text_time`` added embedding from the pooled projection and the six size/crop ids, computed
with :func:`clipguide.load_clip` (the package's own model layer). 10% of captions are dropped
to the empty prompt for classifier-free guidance; epsilon prediction on SDXL's noise schedule.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import time
from pathlib import Path

import torch

from clipguide.cli.files import atomic_open
from clipguide.shapes.shipped import WEIGHTS_DIR

from .common import begin_step, resume, to_unit
from .data import build_pool, load_cache

__all__ = ["SCHEDULE", "TIME_IDS", "build_unet", "train_unet", "unet_config"]

log = logging.getLogger(__name__)

# SDXL's training schedule (scaled_linear betas 0.00085 -> 0.012 over 1000 steps).
SCHEDULE = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    prediction_type="epsilon",
)
# original size, crop top-left, target size: always the full 64x64 scene.
TIME_IDS = (64.0, 64.0, 0.0, 0.0, 64.0, 64.0)
ADDITION_TIME_EMBED_DIM = 16


def unet_config(text_width: int, pooled_dim: int) -> dict:
    """SDXL's UNet layout, shrunk: no attention at the top level, text_time added embedding."""
    return dict(
        sample_size=16,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=(32, 64, 96),
        layers_per_block=1,
        attention_head_dim=(1, 2, 3),  # diffusers reads this as heads per block (as SDXL)
        transformer_layers_per_block=(1, 1, 1),
        norm_num_groups=16,
        cross_attention_dim=text_width,
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=ADDITION_TIME_EMBED_DIM,
        projection_class_embeddings_input_dim=pooled_dim + 6 * ADDITION_TIME_EMBED_DIM,
    )


def build_unet(text_width: int, pooled_dim: int):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(**unet_config(text_width, pooled_dim))


@torch.no_grad()
def encode_captions(clip, captions: list[str], batch: int = 256):
    """(hidden_states, pooled) for each caption via the model layer, float32."""
    hs, pooled = [], []
    for i in range(0, len(captions), batch):
        enc = clip.encode_text(captions[i : i + batch])
        hs.append(enc.hidden_states.float())
        pooled.append(enc.pooled.float())
    return torch.cat(hs), torch.cat(pooled)


@torch.no_grad()
def encode_latents(vae, images_u8: torch.Tensor, batch: int = 128) -> torch.Tensor:
    """Scaled latent means (N, 4, 16, 16) of uint8 images."""
    out = []
    for i in range(0, len(images_u8), batch):
        x = to_unit(images_u8[i : i + batch])
        out.append(vae.encode(x).latent_dist.mean * vae.config.scaling_factor)
    return torch.cat(out)


def _latent_data(state: dict) -> dict:
    """The latents cache as stored, checked for its keys (KeyError: rebuild)."""
    return {k: state[k] for k in ("latents", "cap_idx", "captions")}


def _training_data(args: argparse.Namespace) -> dict:
    """Scaled VAE latents of the pool (cached in the run folder), each one's caption index,
    and the captions encoded by the CLIP given now (the last: the empty prompt)."""
    from diffusers import AutoencoderKL

    from clipguide.model import load_clip

    clip_src = args.clip or str(WEIGHTS_DIR / "shapes")
    clip = load_clip(f"local-dir:{clip_src}", towers=("text",), dtype=torch.float32)
    vae = AutoencoderKL.from_pretrained(args.vae or WEIGHTS_DIR / "vae", torch_dtype=torch.float32)
    vae.eval()
    run = Path(args.run_dir)
    run.mkdir(parents=True, exist_ok=True)
    cache = run / f"latents_{args.seed}_{args.pool}.pt"
    data = load_cache(cache, _latent_data)
    if data is None:
        pool = build_pool(args.pool, args.seed, cache_dir=Path(args.run_dir).parent / "pools")
        unique, cap_idx = pool.caption_ids()
        data = dict(latents=encode_latents(vae, pool.images), cap_idx=cap_idx, captions=unique)
        with atomic_open(cache, "wb") as handle:
            torch.save(data, handle)
    # Text encodings always come from the CLIP given now (the one the pipeline will carry);
    # the last entry is the empty prompt, used for classifier-free-guidance dropout.
    data["hs"], data["pooled"] = encode_captions(clip, data["captions"] + [""])
    return data


def train_unet(args: argparse.Namespace) -> None:
    """Epsilon prediction on SDXL's schedule, 10 % of captions dropped, an EMA exported."""
    from diffusers import DDPMScheduler

    torch.manual_seed(args.seed)
    data = _training_data(args)
    latents, cap_idx, hs, pooled = data["latents"], data["cap_idx"], data["hs"], data["pooled"]
    empty = len(data["captions"])
    log.warning("pool %d latents (std %.3f), %d captions", len(latents), latents.std(), empty)

    unet = build_unet(hs.shape[-1], pooled.shape[-1])
    ema = copy.deepcopy(unet).requires_grad_(False)
    log.warning("unet: %.3f M params", sum(p.numel() for p in unet.parameters()) / 1e6)
    sched = DDPMScheduler(**SCHEDULE)
    abar = sched.alphas_cumprod
    both = torch.nn.ModuleDict({"unet": unet, "ema": ema})
    opt, ckpt, step = resume(both, args, weight_decay=0.01, trained=unet)
    time_ids = torch.tensor(TIME_IDS).repeat(args.batch, 1)
    unet.train()
    t0 = time.monotonic()
    while step < args.steps and not args.export_only:
        g = begin_step(opt, step, args)
        idx = torch.randint(len(latents), (args.batch,), generator=g)
        caps = torch.where(torch.rand(args.batch, generator=g) < 0.1, empty, cap_idx[idx])
        x0 = latents[idx]
        t = torch.randint(0, 1000, (args.batch,), generator=g)
        eps = torch.randn(x0.shape, generator=g)
        a = abar[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * eps
        pred = unet(
            xt,
            t,
            encoder_hidden_states=hs[caps],
            added_cond_kwargs={"text_embeds": pooled[caps], "time_ids": time_ids},
        ).sample
        loss = torch.nn.functional.mse_loss(pred, eps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        step += 1
        decay = min(0.999, (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, p in zip(ema.parameters(), unet.parameters(), strict=True):
                pe.lerp_(p, 1 - decay)
        if step % 50 == 0 or step == args.steps:
            log.warning("step %d loss %.4f %.1fs", step, loss.item(), time.monotonic() - t0)
        ckpt.maybe_save(both, opt, step, force=step == args.steps)
    export_unet(ema, Path(args.out or WEIGHTS_DIR))


def export_unet(unet, weights_dir: Path) -> None:
    """fp16 UNet folder plus the sampling scheduler config next to it."""
    unet.to(torch.float16).save_pretrained(weights_dir / "unet", safe_serialization=True)
    sched_dir = weights_dir / "scheduler"
    sched_dir.mkdir(parents=True, exist_ok=True)
    cfg = dict(_class_name="EulerDiscreteScheduler", timestep_spacing="trailing", **SCHEDULE)
    (sched_dir / "scheduler_config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    log.warning("exported %s", weights_dir)
