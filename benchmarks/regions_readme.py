"""How often README's first command's prompt comes out right (oracle), without and with layouts.

``clipguide generate "two red circles above a blue square" --num-images N`` writes image ``i``
as the best of 4 candidates (seeds ``4 i .. 4 i + 3``) by the ``structured`` score; this runs
that for 20 images with ``layouts=None`` (plain candidates) and ``layouts="auto"`` (the
dev-chosen policy) at the same seeds, and counts the oracle's verdicts.

    python benchmarks/regions_readme.py --images 20
Last line: JSON.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

PROMPT = "two red circles above a blue square"


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=20)
    p.add_argument("--best-of", type=int, default=4)
    p.add_argument("--prompt", default=PROMPT)
    args = p.parse_args(argv)
    from clipguide import CLIPScorer, best_of_n, load_clip
    from clipguide.conditioning.layout_policy import plan_candidates
    from clipguide.shapes import check, pipeline

    pipe = pipeline(progress=False)
    scorer = CLIPScorer(load_clip(pipe, vision="shapes"), progress=False)
    n = args.best_of
    counts: dict[str, int] = {}
    any_ok: dict[str, int] = {}
    for name, layouts in (("plain", None), ("layouts", "auto")):
        counts[name] = any_ok[name] = 0
        for i in range(args.images):
            result = best_of_n(
                pipe, args.prompt, n, scorer, seed=n * i, batch_size=n, progress=False,
                method="structured", layouts=layouts, output_type="pt",
            )  # fmt: skip
            oks = [check(im, args.prompt).ok for im in result.images]
            counts[name] += int(oks[0])
            any_ok[name] += int(any(oks))
    used = [c.layout and c.layout.name for c in plan_candidates(args.prompt, n, "auto")]
    summary = {
        "benchmark": "regions_readme",
        "prompt": args.prompt,
        "images": args.images,
        "best_of": n,
        "layouts_used": used,
        "correct": counts,
        "a_correct_candidate": any_ok,
    }
    print(
        f"{args.prompt!r}, best of {n}, {args.images} images: plain {counts['plain']}, "
        f"with layouts {counts['layouts']} correct (a correct candidate: {any_ok})"
    )
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
    sys.exit(0)
