"""Micro-world quality on a held-out split: plain, best-of-N, guidance and their pairings.

Every mode is judged by the oracle first and the held-out judge CLIP second; the guide CLIP,
which guides and picks, is shown only to measure how much of a gain it alone sees. Figures are
paired over the same items (see ``shapes_eval.py`` for the splits and the candidate cache):

- oracle accuracy per family and overall;
- oracle difference against plain and against best-of-N of the same N, in points ± 1 SE;
- guide and judge gains over plain (CLIPScore points) and the *hacking gap* (guide gain minus
  judge gain, ± 1 SE), and the oracle accuracy at equal guide score against plain;
- cost: process CPU time against plain on one thread (median of interleaved repeats).

Best-of-N picks by the guide CLIP's CLIPScore, or by another ``CLIPScorer`` method with
``--pick structured`` (the selection ``clipguide generate`` uses; see ``selection.py``).

    python benchmarks/shapes_quality.py --split test            # docs/measurements.md's table (test split)
    python benchmarks/shapes_quality.py --split dev --modes plain tiny_every5 --limit 140
Last line: JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from functools import cache, partial
from pathlib import Path
from typing import Any

import numpy as np
import shapes_eval as ev
import torch

SAMPLERS: dict[str, dict] = {  # name -> CLIPGuidance settings (None: unguided)
    "plain": None,
    "vae": {},  # the library defaults
    "vae_one_pass": {"decode_size": None, "decode_chunk": None},  # the earlier defaults
    "tiny": {"decoder": "tiny"},
    "tiny_every5": {"decoder": "tiny", "every": 5},
    "tiny_every10": {"decoder": "tiny", "every": 10},
}
# (sampler, N): best-of-N over that sampler's candidates, picked by the guide CLIP
PUBLISHED = [
    ("plain", 1),
    ("plain", 2),
    ("plain", 4),
    ("vae", 1),
    ("tiny", 1),
    ("tiny", 2),
    ("tiny_every10", 1),
    ("tiny_every10", 2),
    ("tiny_every10", 4),
]


def plain(pipe, prompts: list[str], seeds: list[int], ctx: dict) -> list:
    gens = [torch.Generator("cpu").manual_seed(s) for s in seeds]
    out = pipe(
        prompt=prompts,
        num_inference_steps=ctx["steps"],
        guidance_scale=ctx["cfg"],
        generator=gens,
        output_type="pt",
    )
    return list(out.images)


def sampler_for(settings: dict | None, ctx: dict, guidance_cls: Any = None):
    """A sampler: plain, or plain under a ``CLIPGuidance`` (or ``guidance_cls``) with these
    settings."""
    if settings is None:
        return plain
    from clipguide import CLIPGuidance

    guidance_cls = guidance_cls or CLIPGuidance
    kwargs = dict(settings)
    if kwargs.pop("decoder", "vae") == "tiny":
        kwargs["decoder"] = ctx["tiny_decoder"]

    def sample(pipe, prompts, seeds, ctx):
        guidance = guidance_cls(ctx["guide_clip"], **kwargs)
        with guidance.attach(pipe):
            return plain(pipe, prompts, seeds, ctx)

    return sample


def mode_key(name: str, settings: dict | None, ctx: dict) -> str:
    """The cache key of a mode: guided modes carry every resolved setting, so a change of the
    library's defaults is a new key, not a cached image of the old defaults."""
    if settings is not None:
        from clipguide.guidance import GuidanceSettings

        fields = {k: v for k, v in settings.items() if k != "decoder"}
        settings = dict(settings, resolved=dataclasses.asdict(GuidanceSettings(**fields)))
    return json.dumps([name, settings, ctx["steps"], ctx["cfg"]], sort_keys=True)


def cpu_cost(pipe, items: list, sampler, ctx: dict, repeats: int = 3) -> float:
    """Median process-CPU-time ratio of ``sampler`` against plain on one batch (one thread)."""
    prompts, seeds = [i.caption for i in items], [i.seed for i in items]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ratios = []
        for _ in range(repeats):
            times = []
            for fn in (plain, sampler):
                t0 = time.process_time()
                fn(pipe, prompts, seeds, ctx)
                times.append(time.process_time() - t0)
            ratios.append(times[1] / times[0])
    finally:
        torch.set_num_threads(threads)
    return statistics.median(ratios)


def picks(m: ev.Measures, n: int, chooser: Any = None, cands: np.ndarray | None = None, items=()):
    """Index of the chosen candidate among the first ``n`` of each item: the guide CLIP's
    CLIPScore, or ``chooser(images, caption)`` (e.g. a ``CLIPScorer.select`` method)."""
    if chooser is None or n == 1:
        return ev.pick(m.guide[:, :n])
    scores = [chooser(list(cands[i, :n]), it.caption).numpy() for i, it in enumerate(items)]
    return ev.pick(np.stack(scores))


def row(
    name: str, n: int, m: ev.Measures, base: ev.Measures, refs: dict, items, index: np.ndarray
) -> dict:
    """Figures of one mode (best-of-``n`` of sampler ``name``, candidates ``index``) against
    plain and references."""
    c = ev.chosen(m, index)
    out: dict[str, Any] = {"accuracy": ev.accuracy_by_family(c.ok, items)}
    out["vs_plain"] = ev.paired(c.ok, base.ok)
    for ref, rc in refs.items():
        out[f"vs_{ref}"] = ev.paired(c.ok, rc.ok)
    g = ev.paired(c.guide, base.guide)
    j = ev.paired(c.judge, base.judge)
    gap = ev.paired(c.guide - c.judge, base.guide - base.judge)
    out.update(guide_gain=g, judge_gain=j, hacking_gap=gap)
    out["oracle_at_equal_guide_score"] = ev.equal_guide_score(c, base)
    out["guide_score"] = float(100 * c.guide.mean())
    out["judge_score"] = float(100 * c.judge.mean())
    out["ok"] = c.ok[:, 0]
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--split", choices=sorted(ev.SPLIT_SPECS), default="dev")
    p.add_argument("--limit", type=int, default=None, help="family-balanced subset of the split")
    p.add_argument(
        "--modes",
        nargs="+",
        default=None,
        help="SAMPLER:N entries (default: docs/measurements.md's)",
    )
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--cfg", type=float, default=None)
    p.add_argument("--batch", type=int, default=35)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--cache", default="runs/eval_cache")
    p.add_argument("--cost-items", type=int, default=14, help="prompts in the cost batch; 0: skip")
    p.add_argument("--write-split", action="store_true", help="freeze --split's file and exit")
    p.add_argument("--save-sheet", default=None, help="contact sheet of plain samples (PNG)")
    p.add_argument(
        "--pick", default="clipscore", help="CLIPScorer method that picks among N candidates"
    )
    p.add_argument(
        "--refs",
        type=int,
        nargs="*",
        default=[2, 4],
        help="plain best-of-N references each row is paired with (none: plain's first sample only)",
    )
    p.add_argument("--versus", default=None, help="also pair every row with this SAMPLER's row")
    args = p.parse_args(argv)
    from clipguide.scoring.methods import check_method

    check_method(args.pick)
    if args.write_split:
        print(ev.write_split(args.split))
        return {}
    from clipguide import load_clip
    from clipguide.scoring import CLIPScorer
    from clipguide.shapes import (
        DEFAULT_GUIDANCE_SCALE,
        DEFAULT_STEPS,
        load_tiny_decoder,
        pipeline,
    )
    from clipguide.shapes.shipped import WEIGHTS_DIR

    if args.threads:
        torch.set_num_threads(args.threads)
    modes = (
        [(m.split(":")[0], int(m.split(":")[1])) for m in args.modes] if args.modes else PUBLISHED
    )
    items = ev.load_split(args.split, args.limit)
    pipe = pipeline(progress=False)
    ctx = {
        "steps": args.steps or DEFAULT_STEPS,
        "cfg": args.cfg if args.cfg is not None else DEFAULT_GUIDANCE_SCALE,
        "guide_clip": load_clip(pipe, vision="shapes"),
        "tiny_decoder": load_tiny_decoder(),
    }
    guide = CLIPScorer(load_clip("shapes", dtype=torch.float32), progress=False)
    judge = CLIPScorer(load_clip("shapes-judge", dtype=torch.float32), progress=False)
    store = ev.CandidateStore(
        pipe, Path(args.cache), ev.weights_fingerprint(WEIGHTS_DIR), args.batch
    )
    measures: dict[str, ev.Measures] = {}
    cands_of: dict[str, np.ndarray] = {}
    chooser = None if args.pick == "clipscore" else partial(guide.select, method=args.pick)
    if args.versus is not None and (args.versus, 1) not in modes:
        p.error(f"--versus {args.versus!r} must be one of --modes as {args.versus}:1")
    for name, n in [("plain", max([1, *args.refs])), *modes]:
        have = measures.get(name)
        if have is not None and have.ok.shape[1] >= n:
            continue
        settings = SAMPLERS[name]
        cands = store.candidates(
            args.split, items, mode_key(name, settings, ctx), sampler_for(settings, ctx), n, ctx
        )
        measures[name] = ev.measure(cands, items, guide, judge)
        cands_of[name] = cands
    if args.save_sheet:
        _sheet(store.candidates(args.split, items, mode_key("plain", None, ctx), plain, 1, ctx),
               items, args.save_sheet)  # fmt: skip
    base = ev.chosen(measures["plain"], np.zeros(len(items), dtype=int))

    @cache  # plain's best-of-2/4 picks serve as references and as rows: score them once
    def index(name: str, n: int) -> np.ndarray:
        return picks(measures[name], n, chooser, cands_of[name], items)

    refs = {f"best_of_{n}": ev.chosen(measures["plain"], index("plain", n)) for n in args.refs}
    if args.versus is not None:
        refs[args.versus] = ev.chosen(measures[args.versus], index(args.versus, 1))
    results: dict[str, dict] = {}
    costs: dict[str, float] = {}
    for name, n in modes:
        label = name if n == 1 else f"{name}+best_of_{n}"
        results[label] = row(name, n, measures[name], base, refs, items, index(name, n))
        if args.cost_items and name not in costs:
            settings = SAMPLERS[name]
            costs[name] = 1.0 if settings is None else cpu_cost(
                pipe, items[:: max(1, len(items) // args.cost_items)][: args.cost_items],
                sampler_for(settings, ctx), ctx,
            )  # fmt: skip
        if name in costs:
            results[label]["cpu_cost"] = round(n * costs[name], 3)
    _table(results)
    for r in results.values():
        r.pop("ok")
    summary = {
        "benchmark": "shapes_quality",
        "split": args.split,
        "items": len(items),
        "steps": ctx["steps"],
        "cfg": ctx["cfg"],
        "pick": args.pick,
        "modes": results,
    }
    print(json.dumps(summary))
    return summary


def _fmt(pair: tuple[float, float]) -> str:
    return f"{pair[0]:+.1f} ± {pair[1]:.1f}"


def _table(results: dict) -> None:
    names = list(results)
    width = max(16, *(len(n) + 2 for n in names))
    fams = list(next(iter(results.values()))["accuracy"])
    print(f"{'':<28}" + "".join(f"{n:>{width}}" for n in names))
    for fam in fams:
        cells = (f"{100 * results[n]['accuracy'][fam]:.1f}" for n in names)
        print(f"{fam:<28}" + "".join(f"{c:>{width}}" for c in cells))
    keys = [k for k in results[names[0]] if k.startswith("vs_")]
    keys += ["guide_gain", "judge_gain", "hacking_gap", "oracle_at_equal_guide_score"]
    for key in keys:
        print(f"{key:<28}" + "".join(f"{_fmt(results[n][key]):>{width}}" for n in names))
    if all("cpu_cost" in results[n] for n in names):
        print(
            f"{'cpu cost x plain':<28}"
            + "".join(f"{results[n]['cpu_cost']:>{width}.2f}" for n in names)
        )


def _sheet(cands: np.ndarray, items: list, path: str, per_family: int = 4) -> None:
    """The first plain samples of each family, captioned with the oracle's verdict."""
    from PIL import Image

    from clipguide import contact_sheet
    from clipguide.shapes import check

    families = list(dict.fromkeys(i.family for i in items))
    picks = [
        k for f in families for k in [j for j, i in enumerate(items) if i.family == f][:per_family]
    ]
    images = [Image.fromarray(cands[k, 0]) for k in picks]
    captions = [
        f"{'OK' if check(im, items[k].caption).ok else 'X'} {items[k].caption}"
        for im, k in zip(images, picks, strict=True)
    ]
    contact_sheet(images, captions, thumb=192, columns=per_family, font_size=11).save(path)


if __name__ == "__main__":
    main()
    sys.exit(0)
