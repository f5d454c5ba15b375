"""Images/s of ``clipguide score --engine ray`` against the in-process CLI, and what sizes a cluster.

One run, side by side, on the same images (the micro world's CLIP, small PNGs, so the engine's
overhead is what is measured):

- local: ``clipguide score DIR --out scores.csv`` in a fresh process (start-up included);
- ray: ``clipguide score DIR --engine ray --out parts/`` in a fresh process that starts a
  local Ray cluster on this machine's CPUs (start-up of Ray and of its workers included);
  both outputs are compared row by row;
- steady state: the local CLI's rate without its start-up (a 1-image run timed apart), the Ray
  engine's from its Parquet parts' timestamps (first part to last), and the job size from
  which the Ray engine is ahead;
- decode: CPU seconds per image to decode a generated-size PNG (1024² and 512²) and resize +
  crop it to bigG's 224² input (``load_image`` + ``Preprocess.crop_uint8``), one thread;
- FLOPs: bigG's vision tower forward per 224² image, counted by ``FlopCounterMode`` on the
  meta device (``guidance_gpu.bigg_vision``, ``guidance_flops.measure``);
- a paper estimate per GPU (peak fp16 dense FLOP/s x an assumed utilisation / FLOPs per image)
  and the CPU cores per GPU that decoding needs to keep up.

Last line: JSON. Example: ``python benchmarks/scoring_distributed.py --images 2000``
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "two red circles above a blue square"
# peak dense fp16/bf16 tensor FLOP/s (vendor data sheets)
GPUS = {"A100": 312e12, "H100 SXM": 989e12}


def smooth_image(rng: np.random.Generator, size: int) -> Image.Image:
    """A photo-like test image: smooth colour fields plus a little noise (PNG compresses it
    like a generated image, unlike pure noise)."""
    small = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    base = np.asarray(Image.fromarray(small).resize((size, size), Image.BICUBIC), np.int16)
    noise = rng.integers(-6, 7, base.shape)
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))


def make_images(folder: Path, count: int, size: int) -> None:
    rng = np.random.default_rng(0)
    for i in range(count):
        smooth_image(rng, size + int(rng.integers(0, 16))).save(folder / f"img{i:05d}.png")


def timed(command: list[str]) -> float:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    start = time.perf_counter()
    subprocess.run(command, check=True, env=env, capture_output=True, text=True)
    return time.perf_counter() - start


def compare(local_csv: Path, parts: Path) -> dict:
    from clipguide.distributed import read_output

    with local_csv.open(newline="") as handle:
        local = {row["path"]: row for row in csv.DictReader(handle)}
    rows = read_output(parts).to_pylist()
    diffs = [
        abs(r["cosine"] - float(local[r["path"]]["cosine"]))
        for r in rows
        if r["cosine"] is not None
    ]
    return {
        "rows": len(rows),
        "unique_paths": len({r["path"] for r in rows}),
        "same_paths": {r["path"] for r in rows} == set(local),
        "max_cosine_diff": max(diffs),
    }


def decode_cost(size: int, samples: int) -> dict:
    """CPU seconds per image: decode a PNG of ``size``² from bytes, resize + crop to 224²."""
    import torch

    from clipguide.model import load_image
    from clipguide.model.openclip import name_preprocess

    torch.set_num_threads(1)
    pre = name_preprocess("ViT-bigG-14")
    rng = np.random.default_rng(1)
    blobs = []
    for _ in range(samples):
        buffer = io.BytesIO()
        smooth_image(rng, size).save(buffer, format="PNG")
        blobs.append(buffer.getvalue())
    pre.crop_uint8(load_image(blobs[0]))  # warm-up
    start = time.process_time()
    for blob in blobs:
        pre.crop_uint8(load_image(blob))
    seconds = (time.process_time() - start) / samples
    return {
        "size": size,
        "png_kb": round(np.mean([len(b) for b in blobs]) / 1024),
        "cpu_ms": seconds * 1e3,
    }


def bigg_flops() -> int:
    """FLOPs of bigG's vision tower forward for one 224² image (meta device, fp16)."""
    import torch

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from guidance_flops import measure
    from guidance_gpu import bigg_vision

    clip = bigg_vision("meta", torch.float16)
    size = clip.preprocess.image_size
    pixels = torch.zeros(1, 3, size, size, device="meta", dtype=torch.float16)
    with torch.no_grad():
        flops, _ = measure(lambda: clip.vision_model(pixel_values=pixels))
    return flops


def paper(flops: int, cpu_s: float, utilisation: float, gpus: int) -> dict:
    out = {}
    for name, peak in GPUS.items():
        per_gpu = peak * utilisation / flops
        out[name] = {
            "images_per_s_per_gpu": round(per_gpu),
            f"images_per_s_{gpus}_gpus": round(per_gpu * gpus),
            "cpu_cores_per_gpu": round(per_gpu * cpu_s, 1),
        }
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--size", type=int, default=64, help="side of the benchmark images")
    parser.add_argument("--concurrency", type=int, default=2, help="Ray model workers")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--decode-samples", type=int, default=30)
    parser.add_argument("--utilisation", type=float, default=0.4, help="assumed MFU, paper")
    parser.add_argument("--gpus", type=int, default=8)
    args = parser.parse_args(argv)
    shard = max(1, args.images // 8)
    with tempfile.TemporaryDirectory() as tmp:
        folder, one = Path(tmp) / "images", Path(tmp) / "one"
        folder.mkdir()
        one.mkdir()
        make_images(folder, args.images, args.size)
        make_images(one, 1, args.size)
        cli = [sys.executable, "-m", "clipguide", "score", "--prompt", PROMPT, "--model", "shapes"]
        cli += ["--no-progress", "--batch-size", str(args.batch_size)]
        local_s = timed([*cli, str(folder), "--out", str(Path(tmp) / "local.csv")])
        local_start_s = timed([*cli, str(one), "--out", str(Path(tmp) / "one.csv")])
        ray_opts = ["--engine", "ray", "--concurrency", str(args.concurrency)]
        started = time.time()
        parts = Path(tmp) / "parts"
        ray_s = timed(
            [*cli, str(folder), *ray_opts, "--shard-size", str(shard), "--out", str(parts)]
        )
        stamps = sorted(p.stat().st_mtime for p in parts.glob("part-*.parquet"))
        check = compare(Path(tmp) / "local.csv", parts)
    local_rate = args.images / max(local_s - local_start_s, 1e-9)
    ray_rate = (args.images - shard) / max(stamps[-1] - stamps[0], 1e-9)
    ray_start_s = stamps[0] - started - shard / ray_rate  # to the first image scored
    steady = {
        "local_start_s": round(local_start_s, 1),
        "ray_start_s": round(ray_start_s, 1),
        "local_images_per_s": round(local_rate, 1),
        "ray_images_per_s": round(ray_rate, 1),
        "ray_over_local": round(ray_rate / local_rate, 3),
        "break_even_images": round(
            (ray_start_s - local_start_s) / max(1 / local_rate - 1 / ray_rate, 1e-12)
        )
        if ray_rate > local_rate
        else None,
    }
    decode = [decode_cost(size, args.decode_samples) for size in (1024, 512)]
    flops = bigg_flops()
    result = {
        "images": args.images,
        "cpus": os.cpu_count(),
        "local_images_per_s": round(args.images / local_s, 1),
        "ray_images_per_s": round(args.images / ray_s, 1),
        "ray_over_local": round(local_s / ray_s, 3),
        "steady_state": steady,
        "check": check,
        "decode_224": decode,
        "bigg_vision_gflops_per_image": round(flops / 1e9, 1),
        "utilisation_assumed": args.utilisation,
        "paper": paper(flops, decode[0]["cpu_ms"] / 1e3, args.utilisation, args.gpus),
    }
    print(
        f"{'engine':<8}{'seconds':>9}{'images/s':>10}   (same {args.images} images, start-up included)"
    )
    print(f"{'local':<8}{local_s:>9.1f}{result['local_images_per_s']:>10}")
    print(
        f"{'ray':<8}{ray_s:>9.1f}{result['ray_images_per_s']:>10}   ratio {result['ray_over_local']}"
    )
    print(
        f"steady state: local {steady['local_images_per_s']} vs ray {steady['ray_images_per_s']} "
        f"images/s (ratio {steady['ray_over_local']}); start-up local {steady['local_start_s']} s, "
        f"ray {steady['ray_start_s']} s; ray ahead from {steady['break_even_images']} images"
    )
    for row in decode:
        print(
            f"decode+preprocess {row['size']}² PNG ({row['png_kb']} kB) -> 224²: {row['cpu_ms']:.1f} CPU ms/image"
        )
    print(f"bigG vision forward: {flops / 1e9:.0f} GFLOPs per 224² image")
    for name, row in result["paper"].items():
        print(f"{name}: {row}")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
