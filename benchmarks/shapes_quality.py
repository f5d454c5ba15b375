"""Micro-world quality: oracle accuracy per task family, guide/judge CLIP scores, wall time.

A fixed, seeded prompt set (``--per-family`` prompts in each GenEval-like family) is sampled
with each mode; every mode is a function ``mode(pipe, prompts, seeds, ctx) -> images`` in
MODES, so other features add theirs (best-of-N, guidance) without touching the rest.
Prints a table (with each mode's oracle difference from plain and from best-of-2, paired over
the same prompts and seeds, in points ± one standard error), then one JSON line.

    python benchmarks/shapes_quality.py --per-family 60 --threads 2   # the README's table
    python benchmarks/shapes_quality.py --modes plain fast --per-family 10
    python benchmarks/shapes_quality.py --modes plain best_of_2 --sweep   # guidance settings
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import torch

from clipguide import load_clip
from clipguide.scoring import CLIPScorer
from clipguide.shapes import (
    DEFAULT_GUIDANCE_SCALE,
    DEFAULT_STEPS,
    FAMILIES,
    check,
    pipeline,
    prompt_set,
)

Mode = Callable[..., list]


def plain(pipe, prompts: list[str], seeds: list[int], ctx: dict) -> list:
    """Plain sampling with classifier-free guidance, in batches."""
    images = []
    bs = ctx["batch"]
    for i in range(0, len(prompts), bs):
        gens = [torch.Generator("cpu").manual_seed(s) for s in seeds[i : i + bs]]
        out = pipe(
            prompt=prompts[i : i + bs],
            num_inference_steps=ctx["steps"],
            guidance_scale=ctx["cfg"],
            generator=gens,
        )
        images.extend(out.images)
    return images


def _guide(pipe, ctx: dict):
    """The guide CLIP sharing the pipeline's text tower (loaded once per run)."""
    if "guide_clip" not in ctx:
        ctx["guide_clip"] = load_clip(pipe, vision="shapes")
    return ctx["guide_clip"]


def best_of(n: int) -> Mode:
    """Plain sampling of ``n`` candidates per prompt; keep the one the guide CLIP scores best."""

    def mode(pipe, prompts: list[str], seeds: list[int], ctx: dict) -> list:
        scorer = CLIPScorer(_guide(pipe, ctx))
        rep_prompts = [p for p in prompts for _ in range(n)]
        rep_seeds = [s + 100_000 * j for s in seeds for j in range(n)]  # j = 0: plain's seed
        inner = ctx.get("inner", plain)
        candidates = inner(pipe, rep_prompts, rep_seeds, {**ctx, "batch": ctx["batch"] * n})
        scores = scorer.score(candidates, rep_prompts).view(len(prompts), n)
        best = scores.argmax(dim=1).tolist()
        return [candidates[i * n + j] for i, j in enumerate(best)]

    return mode


def _tiny_decoder(ctx: dict):
    """The micro world's distilled AutoencoderTiny (loaded once per run)."""
    if "tiny_decoder" not in ctx:
        from clipguide.shapes import load_tiny_decoder

        ctx["tiny_decoder"] = load_tiny_decoder()
    return ctx["tiny_decoder"]


def guided(mode_name: str, decoder: str = "vae", **settings) -> Mode:
    """CLIP guidance (library defaults unless ``settings`` change them) on the stock pipeline,
    through the pipeline's VAE or (``decoder="tiny"``) the distilled AutoencoderTiny."""

    def mode(pipe, prompts: list[str], seeds: list[int], ctx: dict) -> list:
        from clipguide import CLIPGuidance

        extra = {"decoder": _tiny_decoder(ctx)} if decoder == "tiny" else {}
        guidance = CLIPGuidance(_guide(pipe, ctx), mode=mode_name, **settings, **extra)
        with guidance.attach(pipe):
            return plain(pipe, prompts, seeds, ctx)

    return mode


def guided_best_of(n: int, mode_name: str, **settings) -> Mode:
    def mode(pipe, prompts: list[str], seeds: list[int], ctx: dict) -> list:
        inner = guided(mode_name, **settings)
        return best_of(n)(pipe, prompts, seeds, {**ctx, "inner": inner})

    return mode


MODES: dict[str, Mode] = {  # the README's table
    "plain": plain,
    "best_of_2": best_of(2),
    "best_of_4": best_of(4),
    "fast": guided("fast"),
    "full": guided("full"),
    "tiny": guided("fast", decoder="tiny"),
    "tiny_every10": guided("fast", decoder="tiny", every=10),
    "tiny_every10_best_of_2": guided_best_of(2, "fast", decoder="tiny", every=10),
}
# Guidance settings compared on the full prompt set (run with --modes ... or --sweep).
SWEEP: dict[str, Mode] = {
    "fast_best_of_4": guided_best_of(4, "fast"),
    "fast_scale8": guided("fast", scale=8.0),
    "fast_scale12": guided("fast", scale=12.0),
    "fast_scale8_late": guided("fast", scale=8.0, start=0.4, stop=0.9),
    "fast_scale8_every1": guided("fast", scale=8.0, every=1, start=0.3, stop=0.7),
    "fast_scale16_every4": guided("fast", scale=16.0, every=4),
    "tiny_every1": guided("fast", decoder="tiny", every=1),
    "tiny_every5": guided("fast", decoder="tiny", every=5),
    "tiny_scale8": guided("fast", decoder="tiny", scale=8.0),
    "tiny_every5_scale8": guided("fast", decoder="tiny", every=5, scale=8.0),
    "tiny_every5_best_of_2": guided_best_of(2, "fast", decoder="tiny", every=5),
    "tiny_every5_from_30pct": guided("fast", decoder="tiny", start=0.3, every=5),
    "tiny_once_at_40pct": guided("fast", decoder="tiny", start=0.4, every=10),
    "tiny_once_at_50pct": guided("fast", decoder="tiny", start=0.5, every=10),
    "tiny_once_at_25pct_scale6": guided("fast", decoder="tiny", every=10, scale=6.0),
}
MODES.update(SWEEP)


def evaluate(images, scenes, scorers) -> dict:
    """Oracle accuracy per family and overall; mean CLIPScore per scorer."""
    ok = [check(im, s.caption).ok for im, s in zip(images, scenes, strict=True)]
    acc = {
        fam: sum(o for o, s in zip(ok, scenes, strict=True) if s.family == fam)
        / sum(s.family == fam for s in scenes)
        for fam in FAMILIES
    }
    acc["overall"] = sum(ok) / len(ok)
    captions = [s.caption for s in scenes]
    scores = {name: float(sc.score(images, captions).mean()) for name, sc in scorers.items()}
    return {"accuracy": acc, "scores": scores, "ok": ok}


def paired_difference(ok: list[bool], ref: list[bool]) -> tuple[float, float]:
    """Oracle accuracy difference in points over the same prompts and seeds, and its standard
    error (of the mean per-prompt difference)."""
    d = torch.tensor(ok, dtype=torch.float64) - torch.tensor(ref, dtype=torch.float64)
    return round(100 * float(d.mean()), 2), round(100 * float(d.std() / len(d) ** 0.5), 2)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--per-family", type=int, default=30)
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    p.add_argument("--cfg", type=float, default=DEFAULT_GUIDANCE_SCALE)
    p.add_argument("--batch", type=int, default=35)
    p.add_argument("--scheduler", default=None)
    p.add_argument(
        "--modes",
        nargs="+",
        default=[m for m in MODES if m not in SWEEP],
        choices=sorted(MODES),
    )
    p.add_argument("--sweep", action="store_true", help="add the guidance-settings sweep")
    p.add_argument("--seed", type=int, default=0, help="first sampling seed")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--save-sheet", default=None, help="write a contact sheet of the plain run")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    scenes = prompt_set(args.per_family)
    prompts = [s.caption for s in scenes]
    seeds = [args.seed + i for i in range(len(scenes))]
    pipe = pipeline(scheduler=args.scheduler, progress=False)
    scorers = {
        "guide": CLIPScorer(load_clip("shapes", dtype=torch.float32)),
        "judge": CLIPScorer(load_clip("shapes-judge", dtype=torch.float32)),
    }
    ctx = {"steps": args.steps, "cfg": args.cfg, "batch": args.batch, "scorers": scorers}
    _guide(pipe, ctx)  # loaded once, outside every timing
    _tiny_decoder(ctx)
    plain(pipe, prompts[: args.batch], seeds[: args.batch], ctx)  # warm-up: first calls pay extra
    results = {}
    modes = [*args.modes, *(m for m in SWEEP if args.sweep and m not in args.modes)]
    for name in modes:
        t0 = time.perf_counter()
        images = MODES[name](pipe, prompts, seeds, ctx)
        wall = time.perf_counter() - t0
        results[name] = {**evaluate(images, scenes, scorers), "wall_s": round(wall, 2)}
        if name == "plain" and args.save_sheet:
            _sheet(images, scenes, args.save_sheet)
    ok_of = {name: r["ok"] for name, r in results.items()}
    base = results.get("plain", next(iter(results.values())))["wall_s"]
    for r in results.values():
        r["time_ratio"] = round(r["wall_s"] / base, 3)
    for name, r in results.items():  # against the baselines the README compares with
        oks = r.pop("ok")
        r["paired_vs"] = {
            ref: paired_difference(oks, ok_of[ref])
            for ref in ("plain", "best_of_2")
            if ref in ok_of and ref != name
        }
    _table(results)
    summary = {
        "benchmark": "shapes_quality",
        "prompts": len(scenes),
        "steps": args.steps,
        "cfg": args.cfg,
        "modes": results,
    }
    print(json.dumps(summary))
    return summary


def _table(results: dict) -> None:
    names = list(results)
    print(f"{'family':<14}" + "".join(f"{n:>16}" for n in names))
    for fam in (*FAMILIES, "overall"):
        print(f"{fam:<14}" + "".join(f"{results[n]['accuracy'][fam]:>16.1%}" for n in names))
    for key in ("guide", "judge"):
        print(
            f"{key + ' score':<14}" + "".join(f"{results[n]['scores'][key]:>16.2f}" for n in names)
        )
    print(f"{'time ratio':<14}" + "".join(f"{results[n]['time_ratio']:>16.2f}" for n in names))
    for ref in ("plain", "best_of_2"):
        cells = [
            f"{d:+.1f} ± {se:.1f}" if (d, se) != (None, None) else "-"
            for d, se in (results[n]["paired_vs"].get(ref, (None, None)) for n in names)
        ]
        print(f"{'vs ' + ref:<14}" + "".join(f"{c:>16}" for c in cells))


def _sheet(images, scenes, path: str, per_family: int = 4) -> None:
    """A labelled contact sheet: the first prompts of each family, oracle verdict marked."""
    from clipguide.sheet import contact_sheet

    picks = [
        i
        for fam in FAMILIES
        for i in [j for j, s in enumerate(scenes) if s.family == fam][:per_family]
    ]
    captions = [
        f"{'OK' if check(images[i], scenes[i].caption).ok else 'X'} {scenes[i].caption}"
        for i in picks
    ]
    sheet = contact_sheet(
        [images[i] for i in picks], captions, thumb=192, columns=per_family, font_size=11
    )
    sheet.save(path)


if __name__ == "__main__":
    main()
