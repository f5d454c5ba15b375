"""Stage ``decoder``: a tiny ``AutoencoderTiny`` distilled from the shipped VAE, for guidance.

CLIP guidance decodes the predicted clean latents and back-propagates through the decoder at
every guided step. The micro world's VAE decoder costs about three UNet evaluations for that;
this stage fits a stock diffusers ``AutoencoderTiny`` (the same class as TAESD/TAESDXL, which
play this role for real SDXL) to reproduce the VAE's decodes at a fraction of the cost.

Training pairs are (latents, VAE decode of those latents): clean latents of rendered scenes,
and the predicted x0 of the shipped UNet along sampling trajectories (what guidance decodes:
blurrier, off the clean-latent distribution). The encoder is fitted to the VAE's scaled latent
means so the exported autoencoder is whole, though guidance uses only its decoder.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import torch

from clipguide.cli.files import atomic_open
from clipguide.shapes.shipped import WEIGHTS_DIR

from .common import begin_step, optimiser_step, psnr, resume, to_unit
from .data import build_pool, load_cache
from .unet import encode_latents

__all__ = ["DECODER_CONFIG", "build_decoder", "train_decoder"]

log = logging.getLogger(__name__)

# 16 channels everywhere; the decoder's work is at 16x16 and 32x32, then one convolution at 64x64.
DECODER_CONFIG = dict(
    in_channels=3,
    out_channels=3,
    encoder_block_out_channels=(16, 16, 16),
    num_encoder_blocks=(1, 1, 1),
    decoder_block_out_channels=(16, 16, 16),
    num_decoder_blocks=(3, 1, 0),
    latent_channels=4,
    scaling_factor=1.0,  # takes the pipeline's (scaled) latents as they are, like TAESDXL
    shift_factor=0.0,
)


def build_decoder():
    from diffusers import AutoencoderTiny

    return AutoencoderTiny(**DECODER_CONFIG)


@torch.no_grad()
def trajectory_latents(prompts: list[str], steps: int, seed: int, batch: int = 64) -> torch.Tensor:
    """Predicted x0 at every step of the shipped pipeline's sampling of ``prompts``.

    Returned in the order (chunk of ``batch`` prompts, step, prompt in chunk).
    """
    from clipguide.guidance.step import DenoiserStep
    from clipguide.shapes.shipped import DEFAULT_GUIDANCE_SCALE, pipeline

    pipe = pipeline(progress=False)
    found: list[torch.Tensor] = []

    def grab(unet, args, kwargs, output):  # what guidance differentiates: the combined x0
        found.append(DenoiserStep.from_unet_call(pipe, args, kwargs, output).x0_eps()[0])

    handle = pipe.unet.register_forward_hook(grab, with_kwargs=True)
    try:
        for i in range(0, len(prompts), batch):
            pipe(
                prompts[i : i + batch],
                num_inference_steps=steps,
                guidance_scale=DEFAULT_GUIDANCE_SCALE,
                generator=torch.Generator().manual_seed(seed + i),
                output_type="latent",
            )
    finally:
        handle.remove()
    return torch.cat(found)


def _trajectory_captions(prompts: list[str], steps: int, batch: int = 64) -> list[str]:
    """The prompt of each latent ``trajectory_latents`` returns, in its order."""
    return [
        p
        for i in range(0, len(prompts), batch)
        for _ in range(steps)
        for p in prompts[i : i + batch]
    ]


def guidance_gradients(vae, clip, latents: torch.Tensor, captions: list[str], chunk: int = 64):
    """Per latent: the guide CLIP loss gradient w.r.t. the VAE decoder's output (``u``) and
    w.r.t. the latents through the VAE (``J^T u``), as guidance computes them."""
    from clipguide.guidance.decode import decode_latents
    from clipguide.guidance.loss import spherical_distance

    decoded: list[torch.Tensor] = []  # the decoder's output, [-1, 1], before decode_latents maps it
    handle = vae.decoder.register_forward_hook(lambda module, args, out: decoded.append(out))
    outs, grads = [], []
    try:
        for i in range(0, len(latents), chunk):
            z = latents[i : i + chunk].clone().requires_grad_(True)
            target = clip.encode_text(captions[i : i + chunk]).embeds.float()
            decoded.clear()
            images = decode_latents(vae, z)
            feats = clip.image_features(clip.preprocess.from_tensor(images)).float()
            dist = spherical_distance(feats, target).sum()
            wrt_latents, wrt_output = torch.autograd.grad(dist, (z, decoded[0]))
            outs.append(wrt_output.half())
            grads.append(wrt_latents)
    finally:
        handle.remove()
    return torch.cat(outs), torch.cat(grads)


_DATA_KEYS = ("latents", "images", "pool_images", "clean", "out_grads", "latent_grads")


def _decoder_data(state: dict) -> dict[str, torch.Tensor]:
    """The decoder data cache as stored, checked for its keys (KeyError: rebuild)."""
    return {k: state[k] for k in _DATA_KEYS}


def _dataset(args: argparse.Namespace, vae) -> dict[str, torch.Tensor]:
    from clipguide.model import load_clip

    cache = Path(args.run_dir) / f"decoder_data_{args.seed}_{args.pool}.pt"
    cached = load_cache(cache, _decoder_data)
    if cached is not None:
        return cached
    pool = build_pool(args.pool, args.seed, cache_dir=Path(args.run_dir).parent / "pools")
    with torch.no_grad():
        clean = encode_latents(vae, pool.images)
    prompts = pool.captions[: args.pool // 8]
    predicted = trajectory_latents(prompts, 20, args.seed)
    latents = torch.cat([clean, predicted])
    captions = pool.captions + _trajectory_captions(prompts, 20)
    with torch.no_grad():
        images = torch.cat(
            [
                vae.decode(z / vae.config.scaling_factor).sample.clamp(-1, 1)
                for z in latents.split(256)
            ]
        )
    clip = load_clip(f"local-dir:{args.clip or WEIGHTS_DIR / 'shapes'}", dtype=torch.float32)
    out_grads, latent_grads = guidance_gradients(vae, clip, latents, captions)
    data = dict(
        latents=latents,
        images=images,
        pool_images=pool.images,
        clean=clean,
        out_grads=out_grads,
        latent_grads=latent_grads,
    )
    with atomic_open(cache, "wb") as handle:
        torch.save(data, handle)
    return data


def _gradient_agreement(model, data: dict, n: int = 512) -> float:
    """Mean cosine between the tiny and the VAE guidance gradients on the last ``n`` latents."""
    z = data["latents"][-n:].clone().requires_grad_(True)
    (mine,) = torch.autograd.grad(model.decoder(z), z, grad_outputs=data["out_grads"][-n:].float())
    ref = data["latent_grads"][-n:]
    return float(torch.nn.functional.cosine_similarity(mine.flatten(1), ref.flatten(1)).mean())


def train_decoder(args: argparse.Namespace) -> None:
    """L1 + L2 between the tiny decoder's and the VAE's decodes, plus (``--grad-weight``) the
    relative L2 between their vector-Jacobian products on the guide CLIP's loss gradient:
    matching outputs alone left the two decoders' guidance gradients at cosine ~0.45; L2 on
    the encoder's latents."""
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(args.vae or WEIGHTS_DIR / "vae", torch_dtype=torch.float32)
    vae.eval().requires_grad_(False)
    Path(args.run_dir).mkdir(parents=True, exist_ok=True)
    data = _dataset(args, vae)
    latents, images = data["latents"], data["images"]
    log.warning("decoder data: %d latents (%d clean)", len(latents), len(data["clean"]))
    torch.manual_seed(args.seed)  # here: building the data (when not cached) draws from it too
    model = build_decoder()
    log.warning(
        "decoder: %.3f M params (decoder %.3f M)",
        sum(p.numel() for p in model.parameters()) / 1e6,
        sum(p.numel() for p in model.decoder.parameters()) / 1e6,
    )
    opt, ckpt, step = resume(model, args, weight_decay=0.0)
    model.train()
    t0 = time.monotonic()
    while step < args.steps:
        g = begin_step(opt, step, args)
        idx = torch.randint(len(latents), (args.batch,), generator=g)
        z = latents[idx].clone().requires_grad_(True)
        rec = model.decoder(z)
        target = images[idx]
        loss = (rec - target).abs().mean() + (rec - target).pow(2).mean()
        if args.grad_weight > 0:  # match the VAE's vector-Jacobian product on guidance's loss
            u = data["out_grads"][idx].float()
            (mine,) = torch.autograd.grad(rec, z, grad_outputs=u, create_graph=True)
            ref = data["latent_grads"][idx]
            norm = ref.flatten(1).pow(2).sum(1).clamp_min(1e-12)
            grad_loss = ((mine - ref).flatten(1).pow(2).sum(1) / norm).mean()
            loss = loss + args.grad_weight * grad_loss
        cidx = torch.randint(len(data["clean"]), (args.batch // 4,), generator=g)
        x = to_unit(data["pool_images"][cidx])
        loss = loss + (model.encoder(x) - data["clean"][cidx]).pow(2).mean()
        step = optimiser_step(model, opt, loss, step, args.steps, ckpt, t0)
    model.eval()
    with torch.no_grad():
        z = encode_latents(vae, build_pool(256, args.seed + 1000).images)
        ref = vae.decode(z / vae.config.scaling_factor).sample.clamp(-1, 1)
        log.warning("held-out PSNR vs the VAE's decode %.2f dB", psnr(model.decoder(z), ref))
    cos = _gradient_agreement(model, data)
    log.warning("guidance-gradient cosine to the VAE's (last 512 latents) %.3f", cos)
    out = Path(args.out or WEIGHTS_DIR / "decoder")
    model.to(torch.float16).save_pretrained(out, safe_serialization=True)
    _drop_stray_config_key(out / "config.json")
    log.warning("exported %s", out)


def _drop_stray_config_key(path: Path) -> None:
    """``AutoencoderTiny`` registers ``block_out_channels`` in its config but does not accept
    it back, so ``from_pretrained`` would warn on every load; the key carries nothing."""
    import json

    config = json.loads(path.read_text())
    config.pop("block_out_channels", None)
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
