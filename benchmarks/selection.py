"""How often does a scoring method pick a correct image? Best-of-N selection on the micro world.

For the plain candidates of a held-out split (``shapes_eval.py``: frozen dev/test items,
candidates cached under ``--cache``), every scoring method of ``CLIPScorer`` ranks each item's
N candidates with the guide CLIP; the oracle only measures:

- *selection efficiency*: share of items whose pick is correct, among items with at least one
  correct candidate (the rest no method can get right);
- *pairwise accuracy*: over (correct, wrong) candidate pairs of the same item, the share the
  method scores in the right order (ties count as wrong);
- *pick accuracy*: oracle accuracy of the pick over all items, and its paired difference from
  plain CLIPScore's pick in points ± 1 SE; all per family;
- *cost*: scoring seconds per image against generation seconds per image, measured side by
  side in this run on one thread.

``--tune`` (dev only) also tries a grid of ``StructureWeights`` and prints every setting.

    python benchmarks/selection.py --split dev --tune
    python benchmarks/selection.py --split test --methods clipscore structured
Last line: JSON.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np
import shapes_eval as ev
import torch

GRID = {  # StructureWeights tried with --tune (dev only): parts x relations x counts
    "parts": (0.5, 1.0, 2.0),
    "relations": (0.0, 0.1, 0.3, 0.6),
    "counts": (0.0, 0.05, 0.1, 0.2),
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from clipguide.scoring.methods import METHODS

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--split", choices=("dev", "test"), default="dev")
    p.add_argument("--cache", default="runs/eval_cache", help="candidate cache folder")
    p.add_argument("--n", type=int, default=4, help="candidates per item")
    p.add_argument("--limit", type=int, default=None, help="first K items of the split")
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    p.add_argument("--tune", action="store_true", help="try GRID's weights (dev split only)")
    p.add_argument("--cost-items", type=int, default=8, help="items timed for the cost (0: none)")
    args = p.parse_args(argv)
    if args.tune and args.split != "dev":
        p.error("--tune works on the dev split only: nothing is chosen on test")
    return args


def metrics(scores: np.ndarray, ok: np.ndarray, base_ok: np.ndarray, families: list[str]) -> dict:
    """Efficiency, pairwise and pick accuracy (overall and per family), and the paired
    difference of the pick's accuracy from ``base_ok``."""
    pick = ok[np.arange(len(ok)), np.argmax(scores, axis=1)]
    any_ok = ok.any(axis=1)
    right = np.zeros(len(ok))
    pairs = np.zeros(len(ok))
    for i in range(len(ok)):
        for a, b in itertools.product(np.flatnonzero(ok[i]), np.flatnonzero(~ok[i])):
            pairs[i] += 1
            right[i] += scores[i, a] > scores[i, b]

    def block(mask: np.ndarray) -> dict:
        return {
            "efficiency": float(pick[mask & any_ok].mean()) if (mask & any_ok).any() else None,
            "pairwise": float(right[mask].sum() / pairs[mask].sum()) if pairs[mask].sum() else None,
            "accuracy": float(pick[mask].mean()),
            "vs_clipscore": ev.paired(pick[mask], base_ok[mask]),
            "items": int(mask.sum()),
        }

    fams = np.array(families)
    out = block(np.ones(len(ok), dtype=bool))
    out["family"] = {f: block(fams == f) for f in dict.fromkeys(families)}
    out["pick_ok"] = pick
    return out


def method_scores(scorer, cands: np.ndarray, items: list, method: str) -> np.ndarray:
    """(items, n) selection scores, one item's candidates at a time."""
    return np.stack([scorer.select(list(cands[i]), it.caption, method).numpy()
                     for i, it in enumerate(items)])  # fmt: skip


def tune(scorer, cands: np.ndarray, items: list) -> dict[str, np.ndarray]:
    """Scores of every GRID setting, from each item's terms computed once."""
    from clipguide.scoring.methods import StructureWeights, structure_terms

    terms = [structure_terms(scorer, list(cands[i]), it.caption) for i, it in enumerate(items)]
    out = {}
    for p, r, c in itertools.product(*GRID.values()):
        w = StructureWeights(parts=p, relations=r, counts=c)
        combined = [t.combine(w) for t in terms]
        out[f"structured p{p} r{r} c{c}"] = np.stack(
            [(t.whole if s is None else s).numpy() for t, s in zip(terms, combined, strict=True)]
        )
    return out


def costs(pipe, scorer, cands: np.ndarray, items: list, methods: list[str], ctx: dict) -> dict:
    """Seconds per image of generation and of each method's scoring, one thread, same run."""
    from shapes_quality import plain

    prompts, seeds = [i.caption for i in items], [i.seed for i in items]
    t0 = time.process_time()
    plain(pipe, prompts, seeds, ctx)
    gen = (time.process_time() - t0) / len(items)
    out = {"generation_s_per_image": gen}
    for m in methods:
        t0 = time.process_time()
        method_scores(scorer, cands, items, m)
        s = (time.process_time() - t0) / (len(items) * cands.shape[1])  # per candidate image
        out[m] = {"s_per_image": s, "vs_generation": s / gen}
    return out


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    from shapes_quality import mode_key, plain

    from clipguide.model import load_clip
    from clipguide.scoring import CLIPScorer
    from clipguide.shapes import DEFAULT_GUIDANCE_SCALE, DEFAULT_STEPS, check, pipeline
    from clipguide.shapes.shipped import WEIGHTS_DIR

    torch.set_num_threads(1)
    items = ev.load_split(args.split, args.limit)
    pipe = pipeline(progress=False)
    ctx = {"steps": DEFAULT_STEPS, "cfg": DEFAULT_GUIDANCE_SCALE}
    store = ev.CandidateStore(pipe, Path(args.cache), ev.weights_fingerprint(WEIGHTS_DIR))
    cands = store.candidates(args.split, items, mode_key("plain", None, ctx), plain, args.n, ctx)
    ok = np.array([[check(c, it.caption).ok for c in cands[i]] for i, it in enumerate(items)])
    scorer = CLIPScorer(load_clip("shapes", dtype=torch.float32), progress=False)
    scores = {m: method_scores(scorer, cands, items, m) for m in args.methods}
    if args.tune:
        scores.update(tune(scorer, cands, items))
    base = ok[np.arange(len(items)), np.argmax(
        scores["clipscore"] if "clipscore" in scores else method_scores(scorer, cands, items, "clipscore"), 1
    )]  # fmt: skip
    families = [it.family for it in items]
    rows = {name: metrics(s, ok, base, families) for name, s in scores.items()}
    cost = {}
    if args.cost_items:
        k = min(args.cost_items, len(items))
        step = max(1, len(items) // k)
        picked = list(range(0, len(items), step))[:k]
        cost = costs(pipe, scorer, cands[picked], [items[i] for i in picked], args.methods, ctx)
    _print(rows, ok, cost, args)
    for r in rows.values():
        r.pop("pick_ok")
    summary = {
        "benchmark": "selection",
        "split": args.split,
        "items": len(items),
        "n": args.n,
        "any_correct": float(ok.any(axis=1).mean()),
        "settings_tried": len(rows),
        "methods": rows,
        "cost": cost,
    }
    print(json.dumps(summary))
    return summary


def _pm(pair: tuple[float, float]) -> str:
    return f"{pair[0]:+.1f}±{pair[1]:.1f}"


def _print(rows: dict, ok: np.ndarray, cost: dict, args: argparse.Namespace) -> None:
    fams = list(next(iter(rows.values()))["family"])
    print(f"split {args.split}: {len(ok)} items, N={args.n}, any correct {ok.any(1).mean():.3f}")
    print(f"{'method':<30} {'eff':>6} {'pair':>6} {'acc':>6} {'vs clipscore':>12} | "
          + " ".join(f"{f[:9]:>9}" for f in fams) + "  (efficiency per family)")  # fmt: skip
    for name, r in rows.items():
        cells = " ".join(f"{r['family'][f]['efficiency'] or 0:>9.2f}" for f in fams)
        print(f"{name:<30} {r['efficiency']:>6.3f} {r['pairwise']:>6.3f} {r['accuracy']:>6.3f} "
              f"{_pm(r['vs_clipscore']):>12} | {cells}")  # fmt: skip
    if cost:
        print(f"generation {cost['generation_s_per_image']:.3f} s/image; scoring per image:")
        for m in args.methods:
            print(f"  {m:<12} {cost[m]['s_per_image']:.4f} s ({cost[m]['vs_generation']:.3f}x)")


if __name__ == "__main__":
    main()
    sys.exit(0)
