"""Encode time of ``clipguide.encode_prompt``: cold vs cached, long vs short prompts.

Runs on random-weight text towers (no downloads): a tiny one and a mid-size one (width 512,
12 layers, the size of ViT-B's text tower), 64 prompts each. Every figure is the median of
``--repeats`` runs measured side by side in this process; the last line is JSON with ratios.

    python benchmarks/conditioning.py [--repeats 3] [--prompts 64] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import torch
from transformers import CLIPTextConfig, CLIPTextModelWithProjection

from clipguide.conditioning import encode_prompt
from clipguide.conditioning.prompts import tokenize_prompt
from clipguide.model.clip import CLIP
from clipguide.model.text_cache import TextEncodingCache
from clipguide.model.tokenizer import offline_tokenizer

TOWERS = {
    "tiny": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4),
    "mid": dict(
        hidden_size=512, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=8
    ),
}
COLOURS = ["red", "green", "blue", "yellow", "purple", "orange", "white", "black"]
SHAPES = ["cube", "sphere", "cone", "torus", "cylinder", "pyramid", "star", "ring"]


def short_prompt(i: int) -> str:
    c, s = COLOURS[i % 8], SHAPES[(i // 8) % 8]
    return f"a photo of a {c} {s} number {i}, soft light"


def long_prompt(i: int, tokenizer, target: int = 300) -> str:
    """About ``target`` tokens of comma-separated phrases, some weighted."""
    parts, k = [], 0
    while True:
        c, s = COLOURS[(i + k) % 8], SHAPES[(i + 3 * k) % 8]
        phrase = f"({c} {s}:1.2)" if k % 3 == 0 else f"a {c} {s} on a table"
        parts.append(f"{phrase} number {i}-{k}")
        text = ", ".join(parts)
        if _count(text, tokenizer) >= target:
            return text
        k += 1


def _count(text: str, tokenizer) -> int:
    return tokenize_prompt(text, [tokenizer]).num_tokens


def make_clip(size: str) -> CLIP:
    torch.manual_seed(0)
    cfg = CLIPTextConfig(
        vocab_size=49408,
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=1,
        projection_dim=TOWERS[size]["hidden_size"],
        hidden_act="gelu",
        **TOWERS[size],
    )
    model = CLIPTextModelWithProjection(cfg).eval()
    return CLIP(text_model=model, tokenizer=offline_tokenizer(), name=f"random-{size}")


def timed(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median seconds of each function, run in turn each repeat (so load hits all alike)."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def measure(
    clip: CLIP, prompts: list[str], tok, repeats: int, with_no_cache: bool = False
) -> dict[str, float]:
    """Parse/chunk only, no cache, cold cache, warm cache (median seconds)."""
    kw = dict(force_zeros_for_empty_prompt=True)  # time the prompts, not the negatives
    cold_cache, warm_cache = TextEncodingCache(), TextEncodingCache()
    encode_prompt(clip, prompts, cache=warm_cache, **kw)

    def cold() -> None:
        cold_cache.clear()
        encode_prompt(clip, prompts, cache=cold_cache, **kw)

    fns: dict[str, Callable[[], object]] = {
        "parse_s": lambda: [tokenize_prompt(p, [tok]) for p in prompts],
        "cold_s": cold,
        "cached_s": lambda: encode_prompt(clip, prompts, cache=warm_cache, **kw),
    }
    if with_no_cache:  # the cache's own overhead: cold cache vs no cache at all
        fns["no_cache_s"] = lambda: encode_prompt(clip, prompts, cache=False, **kw)
    return timed(fns, repeats)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    tok = offline_tokenizer()
    short = [short_prompt(i) for i in range(args.prompts)]
    long = [long_prompt(i, tok) for i in range(args.prompts)]
    n_short = statistics.mean(_count(p, tok) for p in short)
    n_long = statistics.mean(_count(p, tok) for p in long)
    print(f"{args.prompts} prompts: short ~{n_short:.0f} tokens, long ~{n_long:.0f} tokens")
    print(
        f"{'tower':6} {'prompts':7} {'parse+chunk':>12} {'no cache':>10} {'cold':>10} {'cached':>10}"
    )

    result: dict = {"prompts": args.prompts, "short_tokens": n_short, "long_tokens": n_long}
    for size in TOWERS:
        clip = make_clip(size)
        encode_prompt(clip, short[:2], cache=False)  # warm up
        row = {
            "short": measure(clip, short, tok, args.repeats, with_no_cache=True),
            "long": measure(clip, long, tok, args.repeats),
        }
        for name in ("short", "long"):
            r = row[name]
            print(
                f"{size:6} {name:7} {r['parse_s']:11.3f}s {r.get('no_cache_s', float('nan')):9.3f}s "
                f"{r['cold_s']:9.3f}s {r['cached_s']:9.3f}s"
            )
        row["cold_over_cached_short"] = row["short"]["cold_s"] / row["short"]["cached_s"]
        row["cold_over_cached_long"] = row["long"]["cold_s"] / row["long"]["cached_s"]
        row["long_over_short_cold"] = row["long"]["cold_s"] / row["short"]["cold_s"]
        row["cold_over_no_cache_short"] = row["short"]["cold_s"] / row["short"]["no_cache_s"]
        result[size] = row
    print(json.dumps(result))


if __name__ == "__main__":
    main()
