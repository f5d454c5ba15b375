"""Should a negated phrase found in the image lower the ``structured`` score? (dev split only)

The micro world's captions have no negations, so this builds them: for every dev item with two
object groups A and B (families two_object, color_attr, position), the prompt "A, no B" (or
"A without B", every other item) and four rendered candidates: A alone, A with B, A with a
third group C that B does not match, and C with B. The oracle reads each candidate: it is
correct when it shows A and nothing B matches. The guide CLIP picks among the four by each
method; *pick accuracy* is the oracle accuracy of the pick, *pairwise* the share of (correct,
wrong) pairs ordered right, differences paired over items (± 1 SE).

    python benchmarks/negation.py              # every setting, dev split
    python benchmarks/negation.py --limit 60   # a quick look
Last line: JSON.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import shapes_eval as ev
import torch

PENALTIES = (0.0, 0.25, 0.5, 1.0, 2.0)
FAMILIES = ("two_object", "color_attr", "position")


def _scene(groups, seed: int):
    """A rendered scene showing exactly ``groups`` (None when they do not fit)."""
    from clipguide.shapes import Prompt, Scene, render
    from clipguide.shapes.scenes import _objects_for

    rng = np.random.default_rng([seed, 31337])
    for _ in range(20):
        objects = _objects_for(Prompt(tuple(groups)), rng)
        if objects is not None:
            return render(Scene("", "two_object", objects, seed=seed))
    return None


def _other_group(a, b, rng: np.random.Generator):
    """A random single group that B does not match and that differs from A."""
    from clipguide.shapes import COLOURS, SHAPES, Group

    while True:
        g = Group(str(rng.choice(SHAPES)), colour=str(rng.choice(list(COLOURS))))
        probe = type("O", (), {"shape": g.shape, "colour": g.colour, "size": "large"})
        if not b.matches(probe) and (g.shape, g.colour) != (a.shape, a.colour):
            return g


def build(limit: int | None) -> tuple[list[str], list[list], np.ndarray]:
    """Prompts, candidates and the oracle's verdicts (items, 4)."""
    from clipguide.shapes import Group, check, detect, parse_caption

    items = [i for i in ev.load_split("dev") if i.family in FAMILIES][:limit]
    prompts, cands, ok = [], [], []
    for k, it in enumerate(items):
        a, b = parse_caption(it.caption).groups
        a, b = Group(a.shape, colour=a.colour, size=a.size), Group(b.shape, colour=b.colour)
        bare = b.text().split(" ", 1)[1]  # "blue square"
        prompts.append(f"{a.text()}, no {bare}" if k % 2 == 0 else f"{a.text()} without {b.text()}")
        rng = np.random.default_rng(it.seed)
        c = _other_group(a, b, rng)
        row = [_scene(g, it.seed + j) for j, g in enumerate(([a], [a, b], [a, c], [c, b]))]
        cands.append(row)
        ok.append(
            [
                im is not None
                and check(im, a.text()).ok
                and not any(b.matches(o) for o in detect(im))
                for im in row
            ]
        )
    keep = [i for i, row in enumerate(cands) if all(im is not None for im in row)]
    return [prompts[i] for i in keep], [cands[i] for i in keep], np.array(ok)[keep]


def _rates(scores: np.ndarray, ok: np.ndarray) -> tuple[np.ndarray, float]:
    pick = ok[np.arange(len(ok)), np.argmax(scores, axis=1)]
    right = pairs = 0
    for i in range(len(ok)):
        for a in np.flatnonzero(ok[i]):
            for b in np.flatnonzero(~ok[i]):
                pairs += 1
                right += scores[i, a] > scores[i, b]
    return pick, right / max(pairs, 1)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--limit", type=int, default=None, help="first K items")
    args = p.parse_args(argv)
    from clipguide.model import load_clip
    from clipguide.scoring import CLIPScorer
    from clipguide.scoring.captions import positive_prompt
    from clipguide.scoring.methods import StructureWeights, structure_terms

    torch.set_num_threads(1)
    prompts, cands, ok = build(args.limit)
    scorer = CLIPScorer(load_clip("shapes", dtype=torch.float32), progress=False)
    scores = {
        "clipscore": np.stack(
            [scorer.score(c, p).numpy() for p, c in zip(prompts, cands, strict=True)]
        )
    }
    probe = StructureWeights(negated=1.0)
    terms = [structure_terms(scorer, c, p, probe) for p, c in zip(prompts, cands, strict=True)]
    positive = [
        scorer.cosine(c, positive_prompt(p) or p) for p, c in zip(prompts, cands, strict=True)
    ]
    for whole in ("prompt", "positive"):
        for w in PENALTIES:
            weights = StructureWeights(negated=w)
            rows = []
            for t, pos in zip(terms, positive, strict=True):
                base = t.whole if whole == "prompt" else pos
                s = t.combine(weights)
                rows.append((base if s is None else s - t.whole + base).numpy())
            scores[f"structured whole={whole} negated={w}"] = np.stack(rows)
    base = _rates(scores["structured whole=prompt negated=0.0"], ok)[0]
    out = {}
    for name, s in scores.items():
        pick, pairwise = _rates(s, ok)
        out[name] = {
            "accuracy": float(pick.mean()),
            "pairwise": float(pairwise),
            "vs_no_penalty": ev.paired(pick, base),
        }
        print(
            f"{name:42s} pick {100 * pick.mean():5.1f} %  pairwise {100 * pairwise:5.1f} %  "
            f"vs no penalty {out[name]['vs_no_penalty'][0]:+.1f} ± "
            f"{out[name]['vs_no_penalty'][1]:.1f}",
            file=sys.stderr,
        )
    summary = {
        "benchmark": "negation",
        "split": "dev",
        "items": len(prompts),
        "correct_per_item": float(ok.sum(axis=1).mean()),
        "methods": out,
    }
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
