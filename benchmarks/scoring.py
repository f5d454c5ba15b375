"""Images/s of CLIPScorer vs the raw vision-tower forward and vs torchmetrics' CLIPScore.

All three run on the same random-weight CLIP, the same PIL images and the same batch size,
interleaved round by round (best round kept) so a busy machine hurts them alike:

- limit: ``clip.vision_model(pixel_values=...)`` on already-preprocessed tensors;
- scorer: ``CLIPScorer.score(pil_images, prompt)`` (preprocessing, forward, cached text);
- scorer_tensors (for information): the same images given as a uint8 tensor batch, which
  takes the batched torch resize instead of PIL's exact (open_clip-identical) one;
- torchmetrics: ``CLIPScore.update`` with uint8 tensors of the same images (its processor,
  text tower every batch), fed a transformers ``CLIPModel`` holding the same weights.

Last line: JSON with ``scorer_over_limit`` (goal >= 0.90) and ``scorer_over_torchmetrics``
(goal >= 2) in wall-clock images/s, and the same ratios in images per CPU-second (process
time), which stay meaningful when other processes crowd the CPUs. Example: ``python benchmarks/scoring.py --config small --images 64 --batch-size 16``
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings

import numpy as np
import torch
from PIL import Image

from clipguide.testing import torchmetrics_clipscore

_TEXT = {"context_length": 77, "vocab_size": 49408, "width": 256, "heads": 4, "layers": 4}
CONFIGS = {
    "tiny": None,  # clipguide.testing's clipguide-tiny (32 px)
    # ViT-B/32-like depth/width at 224 px, patch 32 (50 tokens): CPU-friendly.
    "small": {
        "embed_dim": 256,
        "vision_cfg": {
            "image_size": 224,
            "layers": 6,
            "width": 384,
            "head_width": 64,
            "patch_size": 32,
        },
        "text_cfg": _TEXT,
    },
    # bigG's patch 14 at 224 px (257 tokens), so the forward-to-preprocessing ratio is bigG-like.
    "patch14": {
        "embed_dim": 256,
        "vision_cfg": {
            "image_size": 224,
            "layers": 6,
            "width": 384,
            "head_width": 64,
            "patch_size": 14,
        },
        "text_cfg": _TEXT,
    },
}


def build_clip(config: str, device: str, dtype: torch.dtype):
    import open_clip

    from clipguide.model import load_clip
    from clipguide.testing import tiny_openclip_model

    if CONFIGS[config] is None:
        model = tiny_openclip_model()
    else:
        torch.manual_seed(0)
        model = open_clip.CLIP(**CONFIGS[config]).eval()
    return load_clip(model, device=device, dtype=dtype)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", choices=sorted(CONFIGS), default="small")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument(
        "--image-size", type=int, default=256, help="side of the input PNG-like images"
    )
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=("fp32", "fp16", "bf16"), default="fp32")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[args.dtype]

    from clipguide.scoring import CLIPScorer

    warnings.filterwarnings("ignore")
    clip = build_clip(args.config, args.device, dtype)
    rng = np.random.default_rng(0)
    arrays = rng.integers(
        0, 256, (args.images, args.image_size, args.image_size, 3), dtype=np.uint8
    )
    images = [Image.fromarray(a) for a in arrays]
    tensors = [torch.from_numpy(a).permute(2, 0, 1).contiguous() for a in arrays]
    prompt = "two red circles above a blue square"
    b = args.batch_size
    pixel_batches = [clip.pixel_values(images[i : i + b]) for i in range(0, len(images), b)]
    scorer = CLIPScorer(clip, batch_size=b, progress=False)
    metric = torchmetrics_clipscore(clip)

    def limit() -> None:
        with torch.no_grad():
            for pv in pixel_batches:
                clip.vision_model(pixel_values=pv)

    def ours() -> None:
        scorer.score(images, prompt)

    uint8_batch = torch.stack(tensors)

    def ours_tensors() -> None:  # same images as uint8 tensors: torch resize, not PIL's
        scorer.score(uint8_batch, prompt)

    def reference() -> None:
        with torch.no_grad():
            for i in range(0, len(tensors), b):
                metric.update(tensors[i : i + b], [prompt] * len(tensors[i : i + b]))

    runs = {
        "limit": limit,
        "scorer": ours,
        "torchmetrics": reference,
        "scorer_tensors": ours_tensors,
    }
    wall = dict.fromkeys(runs, float("inf"))
    cpu = dict.fromkeys(runs, float("inf"))
    for fn in runs.values():  # warm-up (caches, allocator, lazy init)
        fn()
    for _ in range(args.rounds):
        for name, fn in runs.items():
            _sync(args.device)
            start, start_cpu = time.perf_counter(), time.process_time()
            fn()
            _sync(args.device)
            wall[name] = min(wall[name], time.perf_counter() - start)
            cpu[name] = min(cpu[name], time.process_time() - start_cpu)
    rate = {name: args.images / seconds for name, seconds in wall.items()}
    cpu_rate = {name: args.images / seconds for name, seconds in cpu.items()}
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"config={args.config} images={args.images}x{args.image_size}px batch={b} "
        f"device={args.device} dtype={args.dtype} threads={torch.get_num_threads()} "
        f"cpus={os.cpu_count()} load={load:.1f}"
    )
    print(f"{'':13s} {'wall img/s':>11s} {'img/CPU-s':>11s}")
    for name in runs:
        print(f"{name:13s} {rate[name]:11.1f} {cpu_rate[name]:11.1f}")
    if load > (os.cpu_count() or 1):
        print(
            "note: the machine is oversubscribed; wall-clock rates then reflect each run's "
            "share of the CPUs (more threads, more share), images per CPU-second do not"
        )
    print(
        json.dumps(
            {
                "config": args.config,
                "device": args.device,
                "batch_size": b,
                "load_average": round(load, 2),
                "images_per_s": {k: round(v, 2) for k, v in rate.items()},
                "images_per_cpu_s": {k: round(v, 2) for k, v in cpu_rate.items()},
                "scorer_over_limit": round(rate["scorer"] / rate["limit"], 3),
                "scorer_over_torchmetrics": round(rate["scorer"] / rate["torchmetrics"], 3),
                "scorer_over_limit_cpu": round(cpu_rate["scorer"] / cpu_rate["limit"], 3),
                "scorer_over_torchmetrics_cpu": round(
                    cpu_rate["scorer"] / cpu_rate["torchmetrics"], 3
                ),
            }
        )
    )


if __name__ == "__main__":
    main()
