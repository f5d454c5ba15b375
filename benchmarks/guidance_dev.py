"""Guidance variants tried on the dev split (never the test split): the record of what was tried.

Each variant is a prototype on top of ``CLIPGuidance`` (a different loss, a filtered gradient,
another window); the ones that earn their cost on dev move into the library. Figures are paired
against plain over the same dev items: oracle points, judge and guide gains (CLIPScore points),
the hacking gap (guide gain minus judge gain), oracle accuracy at equal guide score, and the
process-CPU cost on one thread.

    python benchmarks/guidance_dev.py --variants tiny_every10 tiny_contrastive_every10
Last line: JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import shapes_eval as ev
import torch
import torch.nn.functional as F
from shapes_quality import cpu_cost, mode_key, plain, sampler_for

from clipguide.guidance import CLIPGuidance
from clipguide.guidance.loss import spherical_distance
from clipguide.scoring.metrics import cosine


class Prototype(CLIPGuidance):
    """CLIPGuidance with experimental knobs: ``loss`` ("spherical", "contrastive", "parts",
    "parts_whole"), ``tau`` (contrastive temperature), ``lowpass`` (Gaussian sigma in latent
    pixels applied to the gradient), ``negatives`` (kinds of hard negatives)."""

    def __init__(self, clip, *, loss="spherical", tau=0.07, lowpass=0.0, negatives=None, **kw):
        super().__init__(clip, **kw)
        self.loss, self.tau, self.lowpass, self.kinds = loss, tau, lowpass, negatives
        self._texts: list[str] | None = None

    def targets(self, batch: int, prompts: Any = None, per_prompt: int = 1) -> torch.Tensor:
        texts = [prompts] if isinstance(prompts, str) else list(prompts or [])
        if len(texts) * per_prompt == batch:
            self._texts = [t for t in texts for _ in range(per_prompt)]
        elif len(texts) == 1:
            self._texts = texts * batch
        return super().targets(batch, prompts, per_prompt)

    def _distance(self, images: torch.Tensor, targets: torch.Tensor):
        if self.loss == "spherical" or self._texts is None:
            return super()._distance(images, targets)
        from clipguide.scoring.captions import hard_negatives, prompt_parts

        s = self.settings
        b = images.shape[0]
        feats = self._features(images)
        tgt = targets.to(feats.device).repeat(s.views, 1)
        sim = cosine(feats, tgt).view(s.views, b).mean(0)
        losses = []
        for i, text in enumerate(self._texts):
            f = feats.view(s.views, b, -1)[:, i]
            whole = spherical_distance(f, tgt.view(s.views, b, -1)[:, i]).mean()
            if self.loss == "windows":
                losses.append(whole + self._window_loss(images[i], text))
                continue
            if self.loss == "contrastive":
                kinds = self.kinds or ("swap_attribute", "change_count", "swap_relation",
                                       "swap_objects", "drop_object")  # fmt: skip
                negs = [n.text for n in hard_negatives(text, kinds=kinds)]
                if not negs:
                    losses.append(whole)
                    continue
                emb = self._encode_texts([text, *negs]).to(f.device)
                logits = F.normalize(f, dim=-1) @ F.normalize(emb, dim=-1).T / self.tau
                ce = F.cross_entropy(logits, torch.zeros(len(f), dtype=torch.long))
                losses.append(ce)
            else:
                parts = prompt_parts(text)
                if not parts:
                    losses.append(whole)
                    continue
                emb = self._encode_texts(parts).to(f.device)
                part = torch.stack([spherical_distance(f, e.expand_as(f)).mean() for e in emb])
                losses.append(part.mean() + (whole if self.loss == "parts_whole" else 0.0))
        return torch.stack(losses), sim

    def _window_loss(self, image: torch.Tensor, text: str) -> torch.Tensor:
        from clipguide.scoring import structure as st
        from clipguide.scoring.captions import prompt_parts
        from clipguide.scoring.captions.relations import relations

        parts = prompt_parts(text)
        if not parts:
            return image.new_zeros(())
        h, w = image.shape[-2:]
        boxes = st.window_boxes(h, w)
        views = st.window_views(image, boxes)
        pre = self.clip.preprocess
        vision = self.clip.vision_model
        f = self.clip.image_features(pre.from_tensor(views).to(vision.device, vision.dtype))
        f = F.normalize(f.float(), dim=-1)
        emb = F.normalize(self._encode_texts(parts).to(f.device), dim=-1)
        sims = (f @ emb.T)[None]  # (1, W, K)
        loss = 1 - st.part_presence(sims)[0]
        rels = relations(text)
        centres = st.box_centres(boxes, h, w)
        for subj, rel, obj in rels:
            if subj in parts and obj in parts:
                a = sims[:, :, parts.index(subj)]
                b = sims[:, :, parts.index(obj)]
                loss = loss + 0.3 * (1 - st.relation_agreement(a, b, centres, rel)[0])
        return loss

    def gradient(self, latents, x0, level, targets, *, decoder=None, model_fn=None):
        grad, dist, sim = super().gradient(
            latents, x0, level, targets, decoder=decoder, model_fn=model_fn
        )
        if self.lowpass > 0:
            grad = gaussian_blur(grad, self.lowpass)
        return grad, dist, sim


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (B, C, H, W) with reflect padding."""
    radius = max(1, int(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    x = F.pad(x, (radius, radius, 0, 0), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    x = F.pad(x, (0, 0, radius, radius), mode="reflect")
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


TINY = {"decoder": "tiny"}
VARIANTS: dict[str, dict] = {
    # the published cheap setting and the library default, as they were
    "tiny_every10": {**TINY, "every": 10},
    "vae_default": {},
    "tiny_default": dict(TINY),
}


def summarise(m: ev.Measures, base: ev.Measures, n: int) -> dict:
    c = ev.chosen(m, ev.pick(m.guide[:, :n]))
    return {
        "oracle": float(100 * c.ok.mean()),
        "vs_plain": ev.paired(c.ok, base.ok),
        "judge_gain": ev.paired(c.judge, base.judge),
        "guide_gain": ev.paired(c.guide, base.guide),
        "hacking_gap": ev.paired(c.guide - c.judge, base.guide - base.judge),
        "equal_guide": ev.equal_guide_score(c, base),
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variants", nargs="+", required=True)
    p.add_argument("--n", type=int, default=1, help="candidates per item (best-of-n)")
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--cache", default="runs/eval_cache")
    p.add_argument("--cost-items", type=int, default=14)
    p.add_argument("--extra", default=None, help="JSON dict of extra variants {name: settings}")
    args = p.parse_args(argv)
    from clipguide import load_clip
    from clipguide.scoring import CLIPScorer
    from clipguide.shapes import DEFAULT_GUIDANCE_SCALE, DEFAULT_STEPS, load_tiny_decoder, pipeline
    from clipguide.shapes.shipped import WEIGHTS_DIR

    torch.set_num_threads(1)
    variants = dict(VARIANTS, **(json.loads(args.extra) if args.extra else {}))
    items = ev.load_split("dev", args.limit)
    pipe = pipeline(progress=False)
    ctx = {
        "steps": DEFAULT_STEPS,
        "cfg": DEFAULT_GUIDANCE_SCALE,
        "guide_clip": load_clip(pipe, vision="shapes"),
        "tiny_decoder": load_tiny_decoder(),
    }
    guide = CLIPScorer(load_clip("shapes", dtype=torch.float32))
    judge = CLIPScorer(load_clip("shapes-judge", dtype=torch.float32))
    store = ev.CandidateStore(pipe, Path(args.cache), ev.weights_fingerprint(WEIGHTS_DIR))
    key = mode_key("plain", None, ctx)
    base_m = ev.measure(store.candidates("dev", items, key, plain, 4, ctx), items, guide, judge)
    base = ev.chosen(base_m, np.zeros(len(items), dtype=int))
    rows = {"plain": summarise(base_m, base, 1), "best_of_2": summarise(base_m, base, 2)}
    rows["best_of_4"] = summarise(base_m, base, 4)
    for name in args.variants:
        settings = variants[name]
        fn = sampler_for(settings, ctx, Prototype)
        cands = store.candidates(
            "dev", items, mode_key("proto:" + name, settings, ctx), fn, args.n, ctx
        )
        m = ev.measure(cands, items, guide, judge)
        for n in range(1, args.n + 1):
            label = name if n == 1 else f"{name}+best_of_{n}"
            rows[label] = summarise(m, base, n)
            if n > 1:
                ref = ev.chosen(base_m, ev.pick(base_m.guide[:, :n]))
                c = ev.chosen(m, ev.pick(m.guide[:, :n]))
                rows[label][f"vs_best_of_{n}"] = ev.paired(c.ok, ref.ok)
        if args.cost_items:
            sub = items[:: max(1, len(items) // args.cost_items)][: args.cost_items]
            rows[name]["cpu_cost"] = round(cpu_cost(pipe, sub, fn, ctx), 3)
        print(name, json.dumps(rows[name]), flush=True)
    for label, r in rows.items():
        cells = [f"{r['oracle']:5.1f}"] + [
            f"{k}={r[k][0]:+.1f}±{r[k][1]:.1f}" for k in r if isinstance(r[k], tuple)
        ]
        cost = f" cost={r['cpu_cost']:.2f}" if "cpu_cost" in r else ""
        print(f"{label:<36}" + " ".join(cells) + cost)
    out = {"benchmark": "guidance_dev", "items": len(items), "rows": rows}
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
    sys.exit(0)
