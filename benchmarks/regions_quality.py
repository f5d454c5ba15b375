"""Regional conditioning with layouts read from the prompt, on the micro world's held-out split.

Modes (``--modes NAME``, settings in :data:`MODES`): plain sampling, and regional sampling where
candidate ``j`` of an item uses the ``j``-th of its layouts (cycling;
:func:`clipguide.conditioning.layouts.layouts_from_prompt`) under ``RegionalPrompt``, optionally
with a method that moves objects into their boxes (``regions_methods.py``). A kind of prompt
the mode does not lay out gets the plain candidate (same seed, taken from plain's cache).
Everything else follows ``shapes_eval.py``'s protocol (cached candidates, oracle first, judge
second, paired SEs). Per family and per kind of prompt (what the reader found):

- single sample: regional candidate 0 vs plain candidate 0 (same seed);
- best-of-4 by ``structured``: plain candidates vs across layouts (4 laid out, or 2 plain + 2
  laid out), and whether a correct candidate is among the 4;
- CPU time per image against plain, both one prompt per call (regions are per call).

    python benchmarks/regions_quality.py --split dev --limit 210 --modes r_default r_stop1
    python benchmarks/regions_quality.py --split test --modes chosen --n 4
Last line: JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import shapes_eval as ev
import shapes_quality as sq
import torch

ALL = ("relation", "colour_binding", "size_binding", "binding", "objects", "count")
USED = ("relation", "colour_binding", "size_binding", "binding")  # the kinds r_stop1 helped
MODES: dict[str, dict] = {  # name -> kinds laid out, LayoutUse fields, method
    "r_default": {"kinds": ALL, "use": {}},  # the prototype's: blend 0.3, first half
    "r_stop1": {"kinds": ALL, "use": {"stop": 1.0}},
    "r_stop25": {"kinds": ALL, "use": {"stop": 0.25}},
    "r_blend0": {"kinds": ALL, "use": {"blend": 0.0}},
    "r_blend6": {"kinds": ALL, "use": {"blend": 0.6}},
    "r_boxguide": {"kinds": ALL, "use": {}, "method": "boxguide"},
    "r_noise": {"kinds": ALL, "use": {}, "method": "noise"},
    "s1_boxguide": {"kinds": USED, "use": {"stop": 1.0}, "method": "boxguide"},
    "s1_noise": {"kinds": USED, "use": {"stop": 1.0}, "method": "noise"},
    # placement (RegionalPrompt(place=...)): regions for every step, x0 pulled toward each
    # box's colour blob in the first 30 % of the steps
    "p_all": {"kinds": ALL, "use": {"stop": 1.0, "place": 0.9, "place_stop": 0.3}},
    "p_only": {"kinds": ALL, "use": {"weight": 0.0, "place": 0.9, "place_stop": 0.3}},
    "chosen": {"kinds": "policy", "use": "policy"},  # DEFAULT_POLICY, every candidate laid out
    # DEFAULT_POLICY with the regions of relations and bindings acting on the first half only
    "chosen_half": {"kinds": "policy", "use": "policy", "policy": "half"},
    # DEFAULT_POLICY with counts placed too (placement alone: one box per object), so that the
    # pick's layout term can check each box for an object
    "chosen_counts": {"kinds": "policy", "use": "policy", "policy": "counts"},
}
# the placement sweep on dev (strength, window; with regions for every step, or alone)
for _w, _s in ((0.3, 0.3), (0.6, 0.3), (1.0, 0.3), (0.9, 0.15), (0.9, 0.5)):
    MODES[f"p_all_w{round(10 * _w)}_s{round(100 * _s)}"] = {
        "kinds": ALL,
        "use": {"stop": 1.0, "place": _w, "place_stop": _s},
    }
for _w in (0.6, 1.0):
    MODES[f"p_only_w{round(10 * _w)}"] = {
        "kinds": ALL,
        "use": {"weight": 0.0, "place": _w, "place_stop": 0.3},
    }
BOXGUIDE = {"scale": 4.0, "start": 0.0, "stop": 0.3, "every": 1}


def mode_policy(settings: dict) -> dict:
    """The policy a ``"policy"`` mode uses: DEFAULT_POLICY, or a variant of it by name."""
    from dataclasses import replace

    from clipguide.conditioning.layout_policy import DEFAULT_POLICY

    if settings.get("policy") == "half":  # regions (weight > 0) on the first half of the steps
        return {
            k: v and (replace(v, stop=0.5) if v.weight else v) for k, v in DEFAULT_POLICY.items()
        }
    if settings.get("policy") == "counts":
        return {**DEFAULT_POLICY, "count": DEFAULT_POLICY["objects"]}
    return dict(DEFAULT_POLICY)


def candidate(caption: str, j: int, settings: dict):
    """Candidate ``j``'s layout and use under a mode's settings (a plain one when none)."""
    from clipguide.conditioning.layout_policy import (
        Candidate,
        LayoutUse,
        plan_candidates,
    )
    from clipguide.conditioning.layouts import layouts_from_prompt

    plain = settings.get("plain", 0)
    if settings["kinds"] == "policy":
        policy = mode_policy(settings)
        return plan_candidates(caption, max(4, j + 1), "auto", plain=plain, policy=policy)[j]
    found = [lay for lay in layouts_from_prompt(caption) if lay.kind in settings["kinds"]]
    if not found:
        return Candidate()
    use = LayoutUse(**settings["use"])
    return plan_candidates(caption, max(4, j + 1), found, plain=plain, use=use)[j]


def regional_sampler(settings: dict):
    """A sampler drawing each prompt alone under its candidate's ``RegionalPrompt``."""
    from regions_methods import BoxGuidance, choose_noise

    from clipguide.conditioning.layout_policy import regional_prompt

    def sample(pipe, prompts: list[str], seeds: list[int], ctx: dict) -> list:
        out = []
        for prompt, seed in zip(prompts, seeds, strict=True):
            j = seed % ev.MAX_CANDIDATES  # every split's seeds start at a multiple of 8
            cand = candidate(prompt, j, settings)
            if cand.layout is None:
                cached = ctx["plain_images"].get((prompt, seed))
                if cached is not None:
                    out.append(torch.from_numpy(cached).permute(2, 0, 1).float() / 255)
                else:
                    out += sq.plain(pipe, [prompt], [seed], ctx)
                continue
            attach = partial(regional_prompt(cand.layout, cand.use).attach, pipe)
            method = settings.get("method")
            if method == "noise":
                seed = choose_noise(pipe, prompt, seed, cand.layout, attach, ctx)
            with contextlib.ExitStack() as stack:
                stack.enter_context(attach())
                if method == "boxguide":
                    guidance = BoxGuidance(
                        ctx["guide_clip"], cand.layout, decoder=ctx["tiny_decoder"], **BOXGUIDE
                    )
                    stack.enter_context(guidance.attach(pipe))
                out += sq.plain(pipe, [prompt], [seed], ctx)
        return out

    return sample


def mode_key(name: str, ctx: dict) -> str:
    settings = MODES[name]
    if settings["kinds"] == "policy":
        policy = {k: v and v.__dict__ for k, v in mode_policy(settings).items()}
        settings = {"policy": policy}
    extra = BOXGUIDE if settings.get("method") == "boxguide" else None
    return json.dumps(["regions-v1", settings, extra, ctx["steps"], ctx["cfg"]], sort_keys=True)


def cpu_ratio(pipe, items: list, settings: dict, ctx: dict) -> float:
    """Median over items that get a layout of the CPU-time ratio, regional against plain,
    each one prompt per call on one thread (``shapes_quality.cpu_cost`` per item)."""
    laid = [i for i in items if candidate(i.caption, 0, settings).layout is not None]
    if not laid:
        return 1.0
    regional = regional_sampler(settings)
    alone = dict(ctx, plain_images={})
    return statistics.median(sq.cpu_cost(pipe, [i], regional, alone, repeats=1) for i in laid)


def cost_by_kind(pipe, items: list, kinds: list[str], settings: dict, ctx: dict, per: int):
    """Per kind of prompt that gets a layout, the median CPU ratio of a laid-out image
    against plain over ``per`` of its items (one prompt per call, one thread)."""
    out = {}
    for kind in sorted(set(kinds)):
        found = [i for i, k in zip(items, kinds, strict=True) if k == kind]
        some = found[:: max(1, len(found) // per)][:per]
        if candidate(some[0].caption, 0, settings).layout is not None:
            out[kind] = round(cpu_ratio(pipe, some, settings, ctx), 3)
    return out


def best_of_cost(items: list, ratios: dict[str, float], n: int, policy: dict) -> float:
    """Mean cost of best-of-``n`` across layouts as ``best_of_n`` plans it (the default
    spread), in plain images: each laid-out candidate at its kind's ratio, plain ones at 1."""
    from clipguide.conditioning.layout_policy import plan_candidates

    costs = [
        sum(
            1.0 if c.layout is None else ratios[c.layout.kind]
            for c in plan_candidates(i.caption, n)
        )
        for i in items
    ]
    return round(float(np.mean(costs)), 3)


def by_group(values: np.ndarray, groups: list[str]) -> dict[str, float]:
    out = {
        g: float(values[np.array([x == g for x in groups])].mean()) for g in dict.fromkeys(groups)
    }
    out["overall"] = float(values.mean())
    return out


def paired_by_group(a: np.ndarray, b: np.ndarray, groups: list[str]) -> dict[str, tuple]:
    out = {}
    for g in dict.fromkeys(groups):
        mask = np.array([x == g for x in groups])
        out[g] = ev.paired(a[mask], b[mask])
    out["overall"] = ev.paired(a, b)
    return out


def structured_picks(
    guide, cands: np.ndarray, items: list, n: int, layouts: list | None = None
) -> np.ndarray:
    """Best-of-``n`` picks by ``structured``; ``layouts[i]``: the layouts item i's candidates
    were drawn on, read by the score's layout term (as ``best_of_n`` passes them)."""
    drawn = layouts or [None] * len(items)
    scores = [
        guide.select(list(cands[i, :n]), it.caption, "structured", layouts=drawn[i] or None)
        for i, it in enumerate(items)
    ]
    return ev.pick(np.stack([s.numpy() for s in scores]))


def select_cost(guide, cands: np.ndarray, items: list, settings: dict, n: int, count: int):
    """Process CPU time of picking among ``n`` candidates by ``structured`` with the layout
    term against without it (same images, alternated), summed over ``count`` laid-out items;
    and the vision passes per image either way."""
    drawn = drawn_on(items, settings, n)
    laid = [i for i in range(len(items)) if drawn[i]][:count]
    spent = {True: 0.0, False: 0.0}
    for i in laid:
        images, caption = list(cands[i, :n]), items[i].caption
        for use in (True, False):
            t0 = time.process_time()
            guide.select(images, caption, "structured", layouts=drawn[i] if use else None)
            spent[use] += time.process_time() - t0
    with_term, without = spent[True], spent[False]
    boxes = np.mean([sum(len(lay.regions) + 1 for lay in drawn[i]) for i in laid])
    return {"ratio": round(with_term / without, 3), "extra_views_per_image": float(boxes)}


def drawn_on(items: list, settings: dict, k: int) -> list[list]:
    """Per item, the distinct layouts of its first ``k`` candidates under ``settings``."""
    out = []
    for it in items:
        found = (candidate(it.caption, j, settings).layout for j in range(k))
        out.append(list(dict.fromkeys(lay for lay in found if lay is not None)))
    return out


def evaluate(
    name: str,
    m: ev.Measures,
    cands: np.ndarray,
    ref: dict,
    items: list,
    guide,
    n: int,
    settings: dict | None = None,
) -> dict:
    """Figures of one mode against plain (``ref``: plain's measures, candidates and picks):
    single samples (candidate 0) and best-of-``n`` (the mode's candidates, then plain ones),
    each picked by ``structured`` with the layout term (the layouts drawn on, from
    ``settings``) and, side by side, without it (rows ending ``_noterm``)."""
    col = 0
    fams, kinds = ref["families"], ref["kinds"]
    p, pc = ref["measures"], ref["cands"]
    laid = cands.shape[1]
    out: dict[str, Any] = {}
    for label, groups in (("family", fams), ("kind", kinds)):
        out[f"single_by_{label}"] = {
            "plain": by_group(p.ok[:, col], groups),
            name: by_group(m.ok[:, col], groups),
            "oracle_diff": paired_by_group(m.ok[:, col], p.ok[:, col], groups),
            "judge_diff": paired_by_group(m.judge[:, col], p.judge[:, col], groups),
        }
    out["single_guide_gain"] = ev.paired(m.guide[:, col], p.guide[:, col])
    out["single_judge_gain"] = ev.paired(m.judge[:, col], p.judge[:, col])
    out["single_hacking_gap"] = ev.paired(
        m.guide[:, col] - m.judge[:, col], p.guide[:, col] - p.judge[:, col]
    )
    if n >= 2:
        # laid-out candidates 0..k-1 and plain k..n-1: each seed once (k = n // 2, and
        # n - 1 too when that many were made)
        rows = []
        for k in dict.fromkeys([min(laid, n // 2), min(laid, n - 1)]):
            mix = np.concatenate([cands[:, :k], pc[:, k:n]], axis=1)
            mix_m = ev.Measures(
                np.concatenate([m.ok[:, :k], p.ok[:, k:n]], 1),
                np.concatenate([m.guide[:, :k], p.guide[:, k:n]], 1),
                np.concatenate([m.judge[:, :k], p.judge[:, k:n]], 1),
            )
            rows.append((f"laid{k}+plain{n - k}", mix, mix_m, k))
        plain_best = ev.chosen(p, ref["picks"])
        rows += [(f"laid{n}", cands[:, :n], m, n)] if laid >= n else []
        variants = [(*r, settings is not None) for r in rows]
        if settings is not None:  # the same candidates picked without the layout term
            variants += [(r[0] + "_noterm", *r[1:], False) for r in rows]
        chosen: dict[str, ev.Measures] = {}
        for label, cc, mm, k, term in variants:
            drawn = drawn_on(items, settings, k) if term and settings is not None else None
            best = chosen[label] = ev.chosen(mm, structured_picks(guide, cc, items, n, drawn))
            out[f"best_of_{n}_{label}"] = {
                "plain": by_group(plain_best.ok[:, 0], fams),
                label: by_group(best.ok[:, 0], fams),
                "oracle_diff": paired_by_group(best.ok[:, 0], plain_best.ok[:, 0], fams),
                "judge_diff": paired_by_group(best.judge[:, 0], plain_best.judge[:, 0], fams),
                "hacking_gap": ev.paired(
                    best.guide[:, 0] - best.judge[:, 0],
                    plain_best.guide[:, 0] - plain_best.judge[:, 0],
                ),
                "any_correct": by_group(mm.ok[:, :n].any(axis=1), fams),
                "any_correct_plain": by_group(p.ok[:, :n].any(axis=1), fams),
            }
        for label in [r[0] for r in rows if r[0] + "_noterm" in chosen]:
            term, noterm = chosen[label], chosen[label + "_noterm"]
            out[f"best_of_{n}_{label}"]["oracle_vs_noterm"] = paired_by_group(
                term.ok[:, 0], noterm.ok[:, 0], fams
            )
            out[f"best_of_{n}_{label}"]["judge_vs_noterm"] = paired_by_group(
                term.judge[:, 0], noterm.judge[:, 0], fams
            )
    return out


def _fmt(x: Any) -> str:
    if isinstance(x, tuple):
        return f"{x[0]:+.1f}±{x[1]:.1f}"
    return f"{100 * x:.1f}"


def _print(name: str, res: dict) -> None:
    for key, block in res.items():
        if not isinstance(block, dict) or not any(isinstance(v, dict) for v in block.values()):
            print(f"{name} {key}: {_fmt(block) if isinstance(block, tuple) else block}")
            continue
        cols = [c for c in block if isinstance(block[c], dict)]
        print(f"\n{name} {key}" + "".join(f"{c:>18}" for c in cols))
        for g in block[cols[0]]:
            print(f"  {g:<22}" + "".join(f"{_fmt(block[c][g]):>18}" for c in cols))
        for c in block:
            if c not in cols:
                print(f"  {c}: {_fmt(block[c])}")


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--split", choices=sorted(ev.SPLIT_SPECS), default="dev")
    p.add_argument("--limit", type=int, default=None, help="family-balanced subset of the split")
    p.add_argument("--modes", nargs="+", default=["chosen"], choices=sorted(MODES))
    p.add_argument("--n", type=int, default=4, help="candidates per item (1: single sample only)")
    p.add_argument(
        "--laid", type=int, default=None, help="laid-out candidates made per item (default: n)"
    )
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--cache", default="runs/eval_cache")
    p.add_argument("--cost-items", type=int, default=10, help="prompts timed for cost; 0: skip")
    p.add_argument("--sheet", default=None, help="contact sheet PNG: plain vs the first mode")
    p.add_argument(
        "--cost-by-kind",
        type=int,
        default=0,
        help="items per kind timed for the per-kind cost and best-of-n's mean cost; 0: skip",
    )
    p.add_argument(
        "--select-cost",
        type=int,
        default=0,
        help="laid-out items timed for structured selection with vs without the layout term",
    )
    args = p.parse_args(argv)
    from clipguide import load_clip
    from clipguide.conditioning.layouts import prompt_kind
    from clipguide.scoring import CLIPScorer
    from clipguide.shapes import DEFAULT_GUIDANCE_SCALE, DEFAULT_STEPS, load_tiny_decoder, pipeline
    from clipguide.shapes.shipped import WEIGHTS_DIR

    if args.threads:
        torch.set_num_threads(args.threads)
    items = ev.load_split(args.split, args.limit)
    pipe = pipeline(progress=False)
    ctx: dict[str, Any] = {
        "steps": DEFAULT_STEPS,
        "cfg": DEFAULT_GUIDANCE_SCALE,
        "guide_clip": load_clip(pipe, vision="shapes"),
        "tiny_decoder": load_tiny_decoder(),
    }
    guide = CLIPScorer(load_clip("shapes", dtype=torch.float32), progress=False)
    judge = CLIPScorer(load_clip("shapes-judge", dtype=torch.float32), progress=False)
    store = ev.CandidateStore(pipe, Path(args.cache), ev.weights_fingerprint(WEIGHTS_DIR))
    n = args.n
    plain_key = sq.mode_key("plain", None, ctx)  # shared with shapes_quality.py's cache
    pc = store.candidates(args.split, items, plain_key, sq.plain, max(n, 1), ctx)
    ctx["plain_images"] = {
        (it.caption, it.seed + j): pc[i, j] for i, it in enumerate(items) for j in range(n)
    }
    pm = ev.measure(pc, items, guide, judge)
    ref = {
        "measures": pm,
        "cands": pc,
        "families": [i.family for i in items],
        "kinds": [prompt_kind(i.caption) or "none" for i in items],
        "picks": structured_picks(guide, pc, items, n) if n >= 2 else None,
    }
    results: dict[str, Any] = {}
    for name in args.modes:
        settings = MODES[name]
        t0 = time.perf_counter()
        laid = min(args.laid or n, n)
        cands = store.candidates(
            args.split, items, mode_key(name, ctx), regional_sampler(settings), laid, ctx
        )
        m = ev.measure(cands, items, guide, judge)
        res = evaluate(name, m, cands, ref, items, guide, n, settings)
        res["wall_seconds"] = round(time.perf_counter() - t0, 1)
        if args.cost_items:
            some = items[:: max(1, len(items) // args.cost_items)]
            res["cpu_per_image_vs_plain"] = round(cpu_ratio(pipe, some, settings, ctx), 3)
        if args.cost_by_kind:
            ratios = cost_by_kind(pipe, items, ref["kinds"], settings, ctx, args.cost_by_kind)
            res["cpu_per_image_vs_plain_by_kind"] = ratios
            if settings["kinds"] == "policy":
                res[f"best_of_{n}_cpu_vs_one_plain_image"] = best_of_cost(
                    items, ratios, n, mode_policy(settings)
                )
        if args.select_cost and n >= 2:
            res["select_cpu_with_vs_without_layout_term"] = select_cost(
                guide, cands, items, settings, n, args.select_cost
            )
        _print(name, res)
        results[name] = res
        if args.sheet and name == args.modes[0]:
            _sheet(pc, cands, items, settings, args.sheet)
    summary = {
        "benchmark": "regions_quality",
        "split": args.split,
        "items": len(items),
        "n": n,
        "modes": results,
    }
    print(json.dumps(summary))
    return summary


def _sheet(
    plain: np.ndarray, laid: np.ndarray, items: list, settings: dict, path: str, col: int = 0
) -> None:
    """Plain candidate 0 beside the laid-out one (boxes drawn), two items per laid-out family,
    captioned with the oracle's verdict."""
    from PIL import Image

    from clipguide.scoring.sheet import contact_sheet
    from clipguide.shapes import check

    rows = []
    for fam in dict.fromkeys(i.family for i in items):
        got = [k for k, i in enumerate(items) if i.family == fam]
        got = [k for k in got if candidate(items[k].caption, col, settings).layout is not None]
        rows += got[:2]
    images, captions, boxes = [], [], []
    for k in rows:
        layout = candidate(items[k].caption, col, settings).layout
        for label, arr, drawn in (
            ("plain", plain[k, col], None),
            ("laid out", laid[k, col], layout),
        ):
            image = Image.fromarray(arr)
            verdict = "OK" if check(image, items[k].caption).ok else "X"
            images.append(image)
            captions.append(f"{verdict} {label}: {items[k].caption}")
            boxes.append(None if drawn is None else list(drawn.boxes))
    sheet = contact_sheet(images, captions, thumb=160, columns=4, font_size=10, boxes=boxes)
    sheet.save(path)


if __name__ == "__main__":
    main()
    sys.exit(0)
