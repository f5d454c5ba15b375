"""The text-cache key's share of a ``structured`` select and of a guided step, with the key taken
on every encode (before) and held for the select / the run (now), side by side in one run.

The CLIP has a text tower of ViT-bigG-14's size (open_clip's config: 1280 wide, 32 layers,
random weights) and a small vision tower (ViT-B/32-like at 224 px), so the text side, where
the key is paid, is bigG's while the CPU time stays in minutes; on a GPU, where bigG's towers
run in milliseconds, the key's share is larger than here. Text embeddings are cached (warm),
as in best-of-N over many candidates of one prompt, so what is timed is the key, the cache
look-ups and the vision work.

- select: ``CLIPScorer.select(4 images, prompt, "structured")`` (three encodes: prompt, count
  variants, phrases) against the same ``selection_scores`` without a held key;
- guided step: a tiny SDXL pipeline's 4-step run with ``CLIPGuidance`` (this CLIP) at every
  step, with the key held for the run against taken at every guided evaluation.

Keys are counted by wrapping the key function; seconds are the best of ``--rounds``.

    python benchmarks/cache_key.py            # ~3 min on 2 CPU cores, ~6 GB
Last line: JSON.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings

import torch

PROMPT = "two red circles left of a blue square"  # parts, a relation and a count


def build_clip(tiny: bool = False):
    """A CLIP with a bigG-sized text tower and a small vision tower (random weights, fp32);
    ``tiny``: clipguide's tiny test CLIP (a smoke run)."""
    import open_clip

    from clipguide.model import load_clip
    from clipguide.testing import tiny_clip

    if tiny:
        return tiny_clip(seed=0)

    bigg = open_clip.get_model_config("ViT-bigG-14")
    vision = {"image_size": 224, "layers": 6, "width": 384, "head_width": 64, "patch_size": 32}
    torch.manual_seed(0)
    model = open_clip.CLIP(
        embed_dim=bigg["embed_dim"], vision_cfg=vision, text_cfg=bigg["text_cfg"]
    )
    return load_clip(model.eval(), dtype=torch.float32)


class KeyCounter:
    """Counts and times the key computations of one module (wraps the key's walk)."""

    def __init__(self, module: torch.nn.Module) -> None:
        import clipguide.model.cache_key as ck

        self.module, self.ck, self.calls = module, ck, 0
        self._describe = ck._describe

        def counting(m):
            if m is self.module:
                self.calls += 1
            return self._describe(m)

        ck._describe = counting

    def close(self) -> None:
        self.ck._describe = self._describe


def best(fn, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--tiny", action="store_true", help="a tiny CLIP: a smoke run in seconds")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")

    from clipguide.guidance import CLIPGuidance
    from clipguide.model.cache_key import model_key
    from clipguide.scoring import CLIPScorer
    from clipguide.scoring.methods import selection_scores
    from clipguide.testing import tiny_sdxl_pipeline

    clip = build_clip(args.tiny)
    text = clip.text_model
    params = sum(t.numel() for t in text.parameters())
    key_s = best(lambda: model_key(text), max(args.rounds, 5))

    g = torch.Generator().manual_seed(0)
    side = clip.preprocess.image_size
    images = [torch.rand(3, side, side, generator=g) for _ in range(4)]
    scorer = CLIPScorer(clip, progress=False)
    scorer.select(images, PROMPT, "structured")  # warm the text cache

    def select_now() -> None:
        scorer.select(images, PROMPT, "structured")

    def select_before() -> None:  # the same maths, a key taken by each encode
        selection_scores(scorer, images, PROMPT, "structured", scorer.weights)

    pipe = tiny_sdxl_pipeline()
    pipe.set_progress_bar_config(disable=True)
    steps = 4
    window = dict(scale=1.0, start=0.0, stop=1.0, every=1)

    class KeyPerEvaluation(CLIPGuidance):
        """Before: no key held for the run, so each guided evaluation takes one."""

        def new_run(self) -> None:
            super().new_run()
            self._run_keys = None

    def run(guidance_cls):
        guidance = guidance_cls(clip, **window)

        def go() -> None:
            with guidance.attach(pipe):
                pipe(PROMPT, num_inference_steps=steps, output_type="pt", guidance_scale=5.0)

        return go

    def unguided() -> None:
        pipe(PROMPT, num_inference_steps=steps, output_type="pt", guidance_scale=5.0)

    run(CLIPGuidance)()  # warm the text cache with the target
    arms = {
        "select_before": select_before,
        "select_now": select_now,
        "guided_before": run(KeyPerEvaluation),
        "guided_now": run(CLIPGuidance),
        "unguided": unguided,
    }
    seconds, keys = dict.fromkeys(arms, float("inf")), {}
    for _ in range(args.rounds):  # interleaved rounds: a busy machine hurts every arm alike
        for name, fn in arms.items():
            counter = KeyCounter(text)
            try:
                seconds[name] = min(seconds[name], best(fn, 1))
            finally:
                counter.close()
            keys[name] = counter.calls
    guided_step = {
        k: (seconds[k] - seconds["unguided"]) / steps for k in ("guided_before", "guided_now")
    }
    out = {
        "benchmark": "cache_key",
        "text_params": params,
        "key_ms": 1000 * key_s,
        "select": {
            arm: {
                "keys": keys[f"select_{arm}"],
                "seconds": seconds[f"select_{arm}"],
                "key_share": keys[f"select_{arm}"] * key_s / seconds[f"select_{arm}"],
            }
            for arm in ("before", "now")
        },
        "guided_run": {
            arm: {
                "keys": keys[f"guided_{arm}"],
                "steps": steps,
                "seconds": seconds[f"guided_{arm}"],
                "guidance_s_per_step": guided_step[f"guided_{arm}"],
                "key_share_of_guidance": keys[f"guided_{arm}"]
                * key_s
                / steps
                / guided_step[f"guided_{arm}"],
            }
            for arm in ("before", "now")
        },
        "unguided_seconds": seconds["unguided"],
    }
    out["select_speedup"] = seconds["select_before"] / seconds["select_now"]
    out["guided_speedup"] = seconds["guided_before"] / seconds["guided_now"]
    print(
        f"text tower {params / 1e6:.0f} M params; one key {1000 * key_s:.1f} ms\n"
        f"select    before: {keys['select_before']} keys, {seconds['select_before']:.3f} s, "
        f"key share {out['select']['before']['key_share']:.1%}\n"
        f"select    now:    {keys['select_now']} keys, {seconds['select_now']:.3f} s, "
        f"key share {out['select']['now']['key_share']:.1%}\n"
        f"guided {steps} steps before: {keys['guided_before']} keys, {seconds['guided_before']:.3f} s "
        f"(key {out['guided_run']['before']['key_share_of_guidance']:.1%} of guidance's cost)\n"
        f"guided {steps} steps now:    {keys['guided_now']} keys, {seconds['guided_now']:.3f} s "
        f"(key {out['guided_run']['now']['key_share_of_guidance']:.1%} of guidance's cost)"
    )
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
