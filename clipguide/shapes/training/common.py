"""What every training stage shares: the learning-rate schedule, the per-step generator, the
optimiser step with logging and checkpoints, the resumable checkpointer."""

from __future__ import annotations

import argparse
import logging
import math
import time
from pathlib import Path

import torch

from clipguide.cli.files import atomic_open

from .data import load_tensors

__all__ = [
    "Checkpointer",
    "begin_step",
    "resume",
    "cosine_lr",
    "optimiser_step",
    "psnr",
    "to_unit",
]

log = logging.getLogger(__name__)


def cosine_lr(step: int, total: int, base: float, warmup: int) -> float:
    """Linear warm-up then cosine decay to 5% of ``base``."""
    if step < warmup:
        return base * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return base * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(t, 1.0))))


class Checkpointer:
    """Save/restore model + optimiser + step under ``run_dir`` (replaced whole, as the command
    line's outputs are: ``clipguide.cli.files.atomic_open``)."""

    def __init__(self, run_dir: str | Path, every_s: float = 120.0):
        self.path = Path(run_dir) / "ckpt.pt"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.every_s = every_s
        self._last = time.monotonic()

    def load(self, model: torch.nn.Module, opt: torch.optim.Optimizer) -> int:
        if not self.path.exists():
            return 0
        state = load_tensors(self.path)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        log.warning("resumed from %s at step %d", self.path, state["step"])
        return int(state["step"])

    def maybe_save(self, model, opt, step: int, force: bool = False) -> None:
        if not force and time.monotonic() - self._last < self.every_s:
            return
        state = {"model": model.state_dict(), "opt": opt.state_dict(), "step": step}
        with atomic_open(self.path, "wb") as handle:
            torch.save(state, handle)
        self._last = time.monotonic()


def resume(model, args: argparse.Namespace, *, weight_decay: float, trained=None):
    """(AdamW over ``trained``'s parameters (default ``model``'s), the run's checkpointer, the
    step to resume from, with ``model`` and the optimiser restored from the checkpoint)."""
    opt = torch.optim.AdamW(
        (trained if trained is not None else model).parameters(),
        lr=args.lr,
        weight_decay=weight_decay,
    )
    ckpt = Checkpointer(args.run_dir)
    return opt, ckpt, ckpt.load(model, opt)


def begin_step(opt: torch.optim.Optimizer, step: int, args: argparse.Namespace) -> torch.Generator:
    """Set this step's learning rate (:func:`cosine_lr`) and return its own seeded generator,
    so a resumed run draws exactly what an uninterrupted one would."""
    for group in opt.param_groups:
        group["lr"] = cosine_lr(step, args.steps, args.lr, args.warmup)
    return torch.Generator().manual_seed(args.seed * 1_000_003 + step)


def optimiser_step(model, opt, loss, step: int, total: int, ckpt: Checkpointer, t0: float) -> int:
    """Backward and step on ``loss``; log every 100 steps, checkpoint when due. Next step."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    step += 1
    if step % 100 == 0 or step == total:
        log.warning("step %d loss %.4f %.1fs", step, loss.item(), time.monotonic() - t0)
    ckpt.maybe_save(model, opt, step, force=step == total)
    return step


def to_unit(images_u8: torch.Tensor) -> torch.Tensor:
    """uint8 images -> float in [-1, 1] (what the VAE and the decoder take)."""
    return images_u8.float() / 127.5 - 1.0


def psnr(x: torch.Tensor, y: torch.Tensor) -> float:
    """PSNR in dB of images in [-1, 1]."""
    mse = ((x.clamp(-1, 1) - y) / 2).pow(2).mean()
    return float(10 * torch.log10(1.0 / mse))
