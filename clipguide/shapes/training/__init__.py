"""Train the micro-world models on CPU: ``python -m clipguide.shapes.training STAGE [options]``.

Stages, one module each: ``clip`` and ``judge`` (open_clip, contrastive: :mod:`.clip`), ``vae``
(AutoencoderKL: :mod:`.vae`), ``unet`` (SDXL-style UNet2DConditionModel on the trained CLIP
text tower and VAE latents: :mod:`.unet`), ``decoder`` (an AutoencoderTiny distilled from the
VAE, a cheap decoder for guidance: :mod:`.decoder`); :mod:`.common` holds what they share and
:mod:`.data` the seeded scene pools. Every stage is seeded, checkpoints to ``--run-dir`` every
few minutes and resumes from there, and exports the fp16 safetensors shipped in
``clipguide/shapes/weights`` (or to ``--out``).
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import torch

from .clip import train_clip
from .decoder import train_decoder
from .unet import train_unet
from .vae import train_vae

__all__ = ["main", "build_parser", "check_args", "STAGES", "STAGE_DEFAULTS"]

log = logging.getLogger(__name__)

STAGES = {
    "clip": train_clip,
    "judge": train_clip,
    "vae": train_vae,
    "unet": train_unet,
    "decoder": train_decoder,
}
"""Each stage's training function (``judge`` is a second CLIP with its own config and seed)."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m clipguide.shapes.training", description=__doc__)
    p.add_argument("stage", choices=list(STAGES))
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--pool", type=int, default=None, help="number of distinct training scenes")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--run-dir", default=None, help="checkpoint folder (default runs/STAGE)")
    p.add_argument("--out", default=None, help="export folder (default inside the package)")
    p.add_argument("--eval-n", type=int, default=300)
    p.add_argument("--init-from", default=None, help="clip/judge: start from RUN_DIR/ckpt.pt")
    p.add_argument(
        "--freeze-text", action="store_true", help="clip/judge: train the vision tower only"
    )
    p.add_argument(
        "--attribute-loss",
        type=float,
        default=0.0,
        help="clip/judge: weight of a loss classifying single-object scenes among all "
        "'a {size} {colour} {shape}' prompts (hard negatives for shape and size)",
    )
    p.add_argument(
        "--export-only", action="store_true", help="unet: export the checkpoint as it is"
    )
    p.add_argument("--clip", default=None, help="unet: CLIP folder to condition on; decoder: guide")
    p.add_argument(
        "--grad-weight",
        type=float,
        default=3.0,
        help="decoder: weight of matching the VAE's guidance gradients",
    )
    p.add_argument("--vae", default=None, help="unet, decoder: VAE folder")
    return p


STAGE_DEFAULTS = {
    "clip": dict(seed=0, steps=500, batch=128, lr=1e-3, config="shapes-clip", name="shapes"),
    "judge": dict(
        seed=1, steps=400, batch=128, lr=1e-3, config="shapes-judge", name="shapes-judge"
    ),
    "vae": dict(seed=2, steps=700, batch=16, lr=1e-3, pool=8000),
    "unet": dict(seed=3, steps=3000, batch=32, lr=1e-3),
    "decoder": dict(seed=4, steps=3000, batch=32, lr=2e-3, pool=4000),
}


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Exit through ``parser.error`` naming the option and value that cannot work, before any
    data is built or weights are read."""
    at_least = {"steps": 1, "batch": 1, "pool": 1, "threads": 1, "eval_n": 1, "warmup": 0}
    for name, low in at_least.items():
        value = getattr(args, name)
        if value < low:
            parser.error(f"--{name.replace('_', '-')} must be >= {low}, got {value}")
    for name in ("lr",):
        if not getattr(args, name) > 0:
            parser.error(f"--{name} must be > 0, got {getattr(args, name)}")
    for name in ("grad_weight", "attribute_loss"):
        if not getattr(args, name) >= 0:
            parser.error(f"--{name.replace('_', '-')} must be >= 0, got {getattr(args, name)}")
    if args.init_from is not None and not (Path(args.init_from) / "ckpt.pt").is_file():
        parser.error(f"--init-from {args.init_from!r} must be a run folder holding ckpt.pt")
    for name in ("clip", "vae"):
        folder = getattr(args, name)
        if folder is not None and not Path(folder).is_dir():
            parser.error(f"--{name} {folder!r} is not a folder")


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    for k, v in {"pool": 20_000, **STAGE_DEFAULTS[args.stage]}.items():
        if getattr(args, k, None) is None:
            setattr(args, k, v)
    check_args(parser, args)
    args.run_dir = args.run_dir or f"runs/{args.stage}"
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    t0 = time.monotonic()
    STAGES[args.stage](args)
    log.warning("stage %s done in %.1f min", args.stage, (time.monotonic() - t0) / 60)
