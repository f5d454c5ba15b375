"""Stage ``clip`` / ``judge``: an open_clip CLIP trained contrastively on scene captions
(identical captions are positives), optionally with an attribute loss on single objects."""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import torch

from clipguide.model.preprocess import OPENAI_MEAN, OPENAI_STD, Preprocess
from clipguide.shapes.grammar import COLOURS, SHAPES, SIZES
from clipguide.shapes.render import render
from clipguide.shapes.scenes import IMAGE_SIZE, sample_scene
from clipguide.shapes.shipped import WEIGHTS_DIR

from .common import Checkpointer, begin_step
from .data import build_pool, load_tensors, uint8_batch

__all__ = [
    "CONFIG_DIR",
    "build_open_clip",
    "export_clip",
    "normalise",
    "train_clip",
    "zero_shot_accuracy",
]

log = logging.getLogger(__name__)
CONFIG_DIR = Path(__file__).parents[1] / "configs"
# the preprocessing the exported CLIPs carry (the model layer's OpenAI mean/std)
_PREPROCESS = Preprocess(IMAGE_SIZE, OPENAI_MEAN, OPENAI_STD)


def build_open_clip(config_name: str):
    """An untrained open_clip model from ``configs/<config_name>.json`` (registered by name)."""
    import open_clip

    open_clip.add_model_config(CONFIG_DIR / f"{config_name}.json")
    return open_clip.create_model(config_name, pretrained=None)


def normalise(images_u8: torch.Tensor) -> torch.Tensor:
    """uint8 images -> CLIP input, normalised as the exported CLIPs' preprocessing says."""
    return _PREPROCESS.normalize(images_u8.float() / 255.0)


def _optimiser(model, args: argparse.Namespace, ckpt: Checkpointer):
    """The model initialised from ``--init-from`` (text tower frozen with ``--freeze-text``),
    its optimiser and the step to resume from."""
    if args.init_from and not ckpt.path.exists():
        state = load_tensors(Path(args.init_from) / "ckpt.pt")
        model.load_state_dict(state["model"])
        log.warning("initialised from %s (step %d)", args.init_from, state["step"])
    if args.freeze_text:  # LiT-style: keep the text tower (and what was conditioned on it)
        for name, p in model.named_parameters():
            p.requires_grad_(name.startswith("visual.") or name == "logit_scale")
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.1, betas=(0.9, 0.98))
    return opt, ckpt.load(model, opt)


def _contrastive_loss(model, img: torch.Tensor, txt: torch.Tensor, inverse: torch.Tensor):
    """Image -> its caption, and caption -> all its images (multi-positive), averaged."""
    logits = model.logit_scale.exp().clamp(max=100) * img @ txt.T  # (B, U)
    loss_i = torch.nn.functional.cross_entropy(logits, inverse)
    target = (inverse[None, :] == torch.arange(txt.shape[0])[:, None]).float()
    target = target / target.sum(1, keepdim=True)
    loss_t = -(target * logits.T.log_softmax(-1)).sum(-1).mean()
    return (loss_i + loss_t) / 2


def train_clip(args: argparse.Namespace) -> None:
    """Contrastive training with multi-positive targets (identical captions are positives)."""
    import open_clip

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
    opt, step = _optimiser(model, args, ckpt)
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
        g = begin_step(opt, step, args)
        idx = torch.randint(len(pool), (args.batch,), generator=g)
        uniq, inverse = torch.unique(cap_idx[idx], return_inverse=True)
        img = model.encode_image(normalise(pool.images[idx]), normalize=True)
        txt = model.encode_text(tokens[uniq], normalize=True) if frozen_text is None else None
        loss = _contrastive_loss(model, img, txt if txt is not None else frozen_text[uniq], inverse)
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
            scale = model.logit_scale.exp().item()
            log.warning(
                "step %d loss %.4f scale %.1f %.1fs",
                step,
                loss.item(),
                scale,
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
    model.eval()
    scenes = [sample_scene(seed * 7 + i, "colors") for i in range(n)]
    img = model.encode_image(normalise(uint8_batch(render(s) for s in scenes)), normalize=True)
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
        "preprocess_cfg": Preprocess(
            cfg["vision_cfg"]["image_size"], OPENAI_MEAN, OPENAI_STD
        ).to_dict(),
    }
    (out / "open_clip_config.json").write_text(json.dumps(meta, indent=2) + "\n")
    state = {k: v.detach().half().contiguous() for k, v in model.state_dict().items()}
    save_file(state, out / "open_clip_model.safetensors")
    log.warning("exported %s", out)
