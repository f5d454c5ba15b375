"""Train the micro-world models on CPU: ``python -m clipguide.shapes.training STAGE [options]``.

Stages: ``clip`` and ``judge`` (open_clip, contrastive), ``vae`` (AutoencoderKL), ``unet``
(SDXL-style UNet2DConditionModel on the trained CLIP text tower and VAE latents), ``decoder``
(an AutoencoderTiny distilled from the VAE, a cheap decoder for guidance). Every stage
is seeded, checkpoints to ``--run-dir`` every few minutes and resumes from there; ``--export``
writes the fp16 safetensors shipped in ``clipguide/shapes/weights``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import time
from pathlib import Path

import torch

from clipguide.model.preprocess import OPENAI_MEAN, OPENAI_STD

from .data import load_tensors

__all__ = ["main", "Checkpointer", "cosine_lr", "optimiser_step"]

log = logging.getLogger("clipguide.shapes.train")
CONFIG_DIR = Path(__file__).parents[1] / "configs"
WEIGHTS_DIR = Path(__file__).parents[1] / "weights"


def cosine_lr(step: int, total: int, base: float, warmup: int) -> float:
    """Linear warm-up then cosine decay to 5% of ``base``."""
    if step < warmup:
        return base * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return base * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(t, 1.0))))


class Checkpointer:
    """Save/restore model + optimiser + step under ``run_dir`` (atomic replace)."""

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
        tmp = self.path.with_suffix(".tmp")
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step}, tmp)
        os.replace(tmp, self.path)
        self._last = time.monotonic()


# ---------------------------------------------------------------- CLIP


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


def build_open_clip(config_name: str):
    """An untrained open_clip model from ``configs/<config_name>.json`` (registered by name)."""
    import open_clip

    open_clip.add_model_config(CONFIG_DIR / f"{config_name}.json")
    return open_clip.create_model(config_name, pretrained=None)


def normalise(images_u8: torch.Tensor) -> torch.Tensor:
    x = images_u8.float() / 255.0
    mean = torch.tensor(OPENAI_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def train_clip(args: argparse.Namespace) -> None:
    """Contrastive training with multi-positive targets (identical captions are positives)."""
    import open_clip

    from .data import build_pool

    torch.manual_seed(args.seed)
    model = build_open_clip(args.config)
    tokenizer = open_clip.get_tokenizer(args.config)
    n_params = sum(p.numel() for p in model.parameters())
    log.warning("model %s: %.2f M params", args.config, n_params / 1e6)
    pool = build_pool(args.pool, args.seed, cache_dir=Path(args.run_dir).parent / "pools")
    unique, cap_idx = pool.caption_ids()
    tokens = tokenizer(unique)
    log.warning("pool %d scenes, %d unique captions", len(pool), len(unique))
    ckpt = Checkpointer(args.run_dir)
    if args.init_from and not ckpt.path.exists():
        state = load_tensors(Path(args.init_from) / "ckpt.pt")
        model.load_state_dict(state["model"])
        log.warning("initialised from %s (step %d)", args.init_from, state["step"])
    if args.freeze_text:  # LiT-style: keep the text tower (and what was conditioned on it)
        for name, p in model.named_parameters():
            p.requires_grad_(name.startswith("visual.") or name == "logit_scale")
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.1, betas=(0.9, 0.98))
    step = ckpt.load(model, opt)
    frozen_text = None
    if args.freeze_text:  # after resuming: embeddings of the final text tower
        with torch.no_grad():
            frozen_text = model.encode_text(tokens, normalize=True)
    attr_text, attr_label = _attribute_targets(
        model, tokenizer, pool, args.attribute_loss, frozen_text is not None
    )
    model.train()
    t0 = time.monotonic()
    while step < args.steps:
        g = torch.Generator().manual_seed(args.seed * 1_000_003 + step)
        idx = torch.randint(len(pool), (args.batch,), generator=g)
        caps = cap_idx[idx]
        uniq, inverse = torch.unique(caps, return_inverse=True)
        for group in opt.param_groups:
            group["lr"] = cosine_lr(step, args.steps, args.lr, args.warmup)
        img = model.encode_image(normalise(pool.images[idx]), normalize=True)
        if frozen_text is None:
            txt = model.encode_text(tokens[uniq], normalize=True)
        else:
            txt = frozen_text[uniq]
        logits = model.logit_scale.exp().clamp(max=100) * img @ txt.T  # (B, U)
        loss_i = torch.nn.functional.cross_entropy(logits, inverse)
        # text -> image: each unique caption against all images, all its images positive
        target = (inverse[None, :] == torch.arange(len(uniq))[:, None]).float()
        target = target / target.sum(1, keepdim=True)
        loss_t = -(target * logits.T.log_softmax(-1)).sum(-1).mean()
        loss = (loss_i + loss_t) / 2
        if attr_text is not None:  # single-object scenes among all "a {size} {colour} {shape}"
            lab = attr_label[idx]
            keep = lab >= 0
            if keep.any():
                at = (
                    attr_text
                    if frozen_text is not None
                    else model.encode_text(attr_text, normalize=True)
                )
                logits_a = model.logit_scale.exp().clamp(max=100) * img[keep] @ at.T
                loss = loss + args.attribute_loss * torch.nn.functional.cross_entropy(
                    logits_a, lab[keep]
                )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        if step % 50 == 0 or step == args.steps:
            log.warning(
                "step %d loss %.4f scale %.1f %.1fs",
                step,
                loss.item(),
                model.logit_scale.exp().item(),
                time.monotonic() - t0,
            )
        ckpt.maybe_save(model, opt, step, force=step == args.steps)
    acc = zero_shot_accuracy(model, tokenizer, n=args.eval_n)
    log.warning("zero-shot single-object accuracy: %s", json.dumps(acc))
    export_clip(model, args.config, args.out or WEIGHTS_DIR / args.name)


def _attribute_targets(model, tokenizer, pool, weight: float, frozen: bool):
    """Prompts "a {size} {colour} {shape}" and, per pool scene, the true one (-1: not one object).

    With a frozen text tower the prompts come back embedded, otherwise as token ids.
    """
    if weight <= 0:
        return None, None
    from ..scenes import COLOURS, SHAPES, SIZES

    labels = [(z, c, s) for z in SIZES for c in COLOURS for s in SHAPES]
    index = {lab: i for i, lab in enumerate(labels)}
    target = torch.tensor(
        [
            index[(sc.objects[0].size, sc.objects[0].colour, sc.objects[0].shape)]
            if len(sc.objects) == 1
            else -1
            for sc in pool.scenes
        ]
    )
    tokens = tokenizer([f"a {z} {c} {s}" for z, c, s in labels])
    if frozen:
        with torch.no_grad():
            return model.encode_text(tokens, normalize=True), target
    return tokens, target


@torch.no_grad()
def zero_shot_accuracy(model, tokenizer, n: int = 300, seed: int = 99_999) -> dict[str, float]:
    """Held-out single-object scenes classified among all "a {colour} {shape}" prompts."""
    from ..scenes import COLOURS, SHAPES, SIZES, render, sample_scene
    from .data import to_tensor

    model.eval()
    scenes = [sample_scene(seed * 7 + i, "colors") for i in range(n)]
    img = model.encode_image(normalise(to_tensor(render(s) for s in scenes)), normalize=True)
    labels = [(c, s) for c in COLOURS for s in SHAPES]
    txt = model.encode_text(tokenizer([f"a {c} {s}" for c, s in labels]), normalize=True)
    pred = [labels[i] for i in (img @ txt.T).argmax(1).tolist()]
    truth = [(sc.objects[0].colour, sc.objects[0].shape) for sc in scenes]
    size_txt = model.encode_text(
        tokenizer(
            [f"a {z} {o.colour} {o.shape}" for sc in scenes for o in sc.objects for z in SIZES]
        ),
        normalize=True,
    )
    size_pred = (img[:, None, :] * size_txt.view(n, len(SIZES), -1)).sum(-1).argmax(1).tolist()
    return {
        "colour": sum(p[0] == t[0] for p, t in zip(pred, truth, strict=True)) / n,
        "shape": sum(p[1] == t[1] for p, t in zip(pred, truth, strict=True)) / n,
        "colour+shape": sum(p == t for p, t in zip(pred, truth, strict=True)) / n,
        "size": sum(SIZES[p] == sc.objects[0].size for p, sc in zip(size_pred, scenes, strict=True))
        / n,
    }


def export_clip(model, config_name: str, out_dir: str | Path) -> None:
    """Write an open_clip ``local-dir`` folder: config json + fp16 safetensors."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = json.loads((CONFIG_DIR / f"{config_name}.json").read_text())
    meta = {
        "model_cfg": cfg,
        "preprocess_cfg": {
            "size": cfg["vision_cfg"]["image_size"],
            "mean": list(OPENAI_MEAN),
            "std": list(OPENAI_STD),
            "interpolation": "bicubic",
            "resize_mode": "shortest",
        },
    }
    (out / "open_clip_config.json").write_text(json.dumps(meta, indent=2) + "\n")
    state = {k: v.detach().half().contiguous() for k, v in model.state_dict().items()}
    save_file(state, out / "open_clip_model.safetensors")
    log.warning("exported %s", out)


# ---------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m clipguide.shapes.training", description=__doc__)
    p.add_argument("stage", choices=["clip", "judge", "vae", "unet", "decoder"])
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
    if args.stage in ("clip", "judge"):
        train_clip(args)
    elif args.stage == "vae":
        from .vae import train_vae

        train_vae(args)
    elif args.stage == "decoder":
        from .decoder import train_decoder

        train_decoder(args)
    else:
        from .unet import train_unet

        train_unet(args)
    log.warning("stage %s done in %.1f min", args.stage, (time.monotonic() - t0) / 60)


if __name__ == "__main__":
    main()
