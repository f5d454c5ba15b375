"""CLIP guidance cost and gain: unguided vs fast vs full, plus a gain-vs-cost sweep.

One process, one pipeline, the same prompts, seeds and steps for every configuration. Time is
measured as process CPU time with one thread (robust on a shared machine; wall time is printed
too), each configuration interleaved with an unguided run and reported as the median ratio.
Gains are mean cosine-similarity differences against the unguided images of the same seeds:
the guide CLIP's, and, in the micro world, a held-out judge CLIP's and the oracle's accuracy.
Best-of-N reranking by the guide (judged by the judge) is printed alongside for comparison.

    python benchmarks/guidance.py            # micro world if its weights exist, else tiny
    python benchmarks/guidance.py --world tiny --quick
Last line: JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from clipguide.guidance import CLIPGuidance, GuidanceSettings


@dataclass
class World:
    name: str
    pipe: Any
    guide: Any
    judge: Any
    prompts: list[str]
    oracle: Any  # callable(image_tensor, prompt) -> bool, or None
    tiny_decoder: Any = None  # a distilled AutoencoderTiny for this world's latents, or None


def _tiny_world(n: int) -> World:
    from clipguide.testing import tiny_clip, tiny_sdxl_pipeline

    prompts = ["a red circle", "a blue square", "two green triangles", "a yellow star"]
    prompts = (prompts * n)[:n]
    return World("tiny", tiny_sdxl_pipeline(), tiny_clip(seed=5), None, prompts, None)


def _shapes_world(n: int, weights: str | None = None) -> World:
    from clipguide import load_clip, shapes

    if weights is None:
        pipe = shapes.pipeline(progress=False)
        guide = shapes.load_shapes_clip("shapes", dtype=torch.float32)
        judge = shapes.load_shapes_clip("shapes-judge", dtype=torch.float32)
        tiny = shapes.load_tiny_decoder()
    else:  # guide/unet/vae/scheduler from a folder laid out like the shipped weights
        from diffusers import AutoencoderKL, StableDiffusionXLPipeline, UNet2DConditionModel

        guide = load_clip(f"local-dir:{weights}/shapes", dtype=torch.float32)
        judge = shapes.load_shapes_clip("shapes-judge", dtype=torch.float32)  # the shipped judge
        pipe = StableDiffusionXLPipeline(
            vae=AutoencoderKL.from_pretrained(f"{weights}/vae"),
            text_encoder=None,
            text_encoder_2=guide.text_model,
            tokenizer=None,
            tokenizer_2=guide.tokenizer,
            unet=UNet2DConditionModel.from_pretrained(f"{weights}/unet"),
            scheduler=shapes.make_scheduler(None, config=dict(_load_json(f"{weights}/scheduler"))),
            force_zeros_for_empty_prompt=False,
            add_watermarker=False,
        ).to(dtype=torch.float32)
        tiny = None
        if Path(f"{weights}/decoder").is_dir():
            from diffusers import AutoencoderTiny

            tiny = AutoencoderTiny.from_pretrained(f"{weights}/decoder").requires_grad_(False)
    per_family = max(1, -(-n // len(shapes.FAMILIES)))
    by_family: dict[str, list[str]] = {}
    for scene in shapes.prompt_set(n_per_family=per_family):
        by_family.setdefault(scene.family, []).append(scene.caption)
    rounds = zip(*by_family.values(), strict=False)  # round robin over families
    prompts = [caption for group in rounds for caption in group][:n]

    def oracle(image: torch.Tensor, prompt: str) -> bool:
        return bool(shapes.check(image, prompt).ok)

    return World("shapes", pipe, guide, judge, prompts, oracle, tiny)


def _load_json(folder: str) -> dict:
    return json.loads((Path(folder) / "scheduler_config.json").read_text())


def build_world(kind: str, n: int, weights: str | None = None) -> World:
    if kind in ("auto", "shapes"):
        try:
            return _shapes_world(n, weights)
        except (FileNotFoundError, ImportError, ValueError) as err:
            if kind == "shapes":
                raise
            print(f"# micro world unavailable ({err}); using the tiny random pipeline", flush=True)
    return _tiny_world(n)


def _embed_similarity(clip: Any, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
    with torch.no_grad():
        return (clip.encode_image(images) * clip.encode_text(prompts).embeds).sum(-1).float()


class Bench:
    def __init__(self, world: World, steps: int, cfg: float, seed: int) -> None:
        self.world, self.steps, self.cfg, self.seed = world, steps, cfg, seed
        world.pipe.set_progress_bar_config(disable=True)

    def generate(self, guidance: CLIPGuidance | None, seed: int | None = None):
        """(images, cpu seconds, wall seconds) for all prompts at one seed."""
        kw = dict(
            prompt=self.world.prompts,
            num_inference_steps=self.steps,
            guidance_scale=self.cfg,
            generator=torch.Generator().manual_seed(self.seed if seed is None else seed),
            output_type="pt",
        )
        c0, w0 = time.process_time(), time.perf_counter()
        if guidance is None:
            images = self.world.pipe(**kw).images
        else:
            with guidance.attach(self.world.pipe):
                images = self.world.pipe(**kw).images
        return images.float(), time.process_time() - c0, time.perf_counter() - w0

    def scores(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        w = self.world
        out = {"guide": _embed_similarity(w.guide, images, w.prompts)}
        if w.judge is not None:
            out["judge"] = _embed_similarity(w.judge, images, w.prompts)
        if w.oracle is not None:
            out["oracle"] = torch.tensor(
                [float(w.oracle(im, p)) for im, p in zip(images, w.prompts, strict=True)]
            )
        return out

    def measure(self, guidance: CLIPGuidance | None, base: dict, repeats: int) -> dict:
        """Median CPU/wall ratio vs interleaved unguided runs, and gains vs the unguided images."""
        cpu, wall = [], []
        for _ in range(repeats):
            _, c_ref, w_ref = self.generate(None)
            images, c, w = self.generate(guidance)
            cpu.append(c / c_ref)
            wall.append(w / w_ref)
        sc = self.scores(images)
        row = {
            "cpu_ratio": round(statistics.median(cpu), 3),
            "wall_ratio": round(statistics.median(wall), 3),
        }
        for key in ("guide", "judge"):
            if key in sc:  # mean paired gain over the images and its standard error
                diff = sc[key] - base[key]
                row[f"{key}_gain"] = round(float(diff.mean()), 4)
                row[f"{key}_gain_se"] = round(float(diff.std() / len(diff) ** 0.5), 4)
        if "oracle" in sc:
            row["oracle_acc"] = round(float(sc["oracle"].mean()), 3)
        return row


def _label(s: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in s.items())


def best_of_n(bench: Bench, ns: tuple[int, ...], base: dict) -> dict:
    """Best-of-N by the guide's similarity, scored by the judge/oracle (seeds 0..N-1)."""
    runs = [bench.scores(bench.generate(None, seed=bench.seed + k)[0]) for k in range(max(ns))]
    out = {}
    for n in ns:
        guide = torch.stack([r["guide"] for r in runs[:n]])
        pick = guide.argmax(0)
        row = {
            "cost_ratio": float(n),
            "guide_gain": float((guide.max(0).values - base["guide"]).mean()),
        }
        for key in ("judge", "oracle"):
            if key in runs[0]:
                vals = torch.stack([r[key] for r in runs[:n]]).gather(0, pick[None])[0]
                name = "judge_gain" if key == "judge" else "oracle_acc"
                row[name] = float((vals - base[key]).mean() if key == "judge" else vals.mean())
        out[f"best_of_{n}"] = {k: round(v, 4) for k, v in row.items()}
    return out


def _linear_decoder(world: World):
    """A ``LinearLatentDecoder`` fitted to the world's VAE on sample images."""
    from clipguide.guidance import LinearLatentDecoder

    if world.name == "shapes":
        from clipguide import shapes
        from clipguide.shapes.training.data import uint8_batch

        images = uint8_batch(shapes.render(shapes.sample_scene(i)) for i in range(64)).float() / 255
    else:
        side = world.pipe.unet.config.sample_size * world.pipe.vae_scale_factor
        images = torch.rand(16, 3, side, side, generator=torch.Generator().manual_seed(0))
    return LinearLatentDecoder.fit(world.pipe.vae, images)


def decoder_costs(world: World, decoders: dict, batch: int = 16, repeats: int = 5) -> dict:
    """Per decoder: decode + backward CPU ms for ``batch`` latents, its ratio to the VAE's, and
    the mean cosine of its guidance gradient with the VAE's (guide CLIP). In the micro world the
    cosine is taken on clean latents of unseen scenes and on the predicted x0 of the guided
    window (steps 25-75 %) of 20-step samplings of their captions, what guidance decodes."""
    from clipguide.guidance.decode import decode_latents
    from clipguide.guidance.schedulers import NoiseLevel

    vae = world.pipe.vae
    side = world.pipe.unet.config.sample_size
    g = torch.Generator().manual_seed(1)
    latents = torch.randn(batch, vae.config.latent_channels, side, side, generator=g)
    prompts = (world.prompts * batch)[:batch]
    sets = {"random": (latents, prompts)}
    if world.name == "shapes":  # real scene latents: the gradients mean something there
        from clipguide.shapes.training.data import build_pool
        from clipguide.shapes.training.decoder import trajectory_latents
        from clipguide.shapes.training.unet import encode_latents

        pool = build_pool(batch, 4242)  # scenes no decoder was trained on
        with torch.no_grad():
            latents = encode_latents(vae, pool.images)
        prompts = pool.captions
        steps = trajectory_latents(prompts, 20, 4242).view(20, batch, *latents.shape[1:])
        sets = {"clean": (latents, prompts), "x0": (steps[5:15].flatten(0, 1), prompts * 10)}
    guidance = CLIPGuidance(world.guide)
    level = NoiseLevel(1.0, 1.0, 1.0, "epsilon", "sigma")  # fast mode: gradient w.r.t. x0

    def gradients(decoder: Any) -> dict[str, torch.Tensor]:
        return {
            name: guidance.gradient(z, z, level, guidance.targets(len(p), p), decoder=decoder)[0]
            for name, (z, p) in sets.items()
        }

    reference = gradients(vae)
    out: dict[str, dict] = {}
    for name, decoder in {"vae": vae, **decoders}.items():
        if decoder is None:
            continue

        def step(decoder: Any = decoder) -> None:
            z = latents.clone().requires_grad_(True)
            decode_latents(decoder, z).sum().backward()

        step()  # warm-up
        t0 = time.process_time()
        for _ in range(repeats):
            step()
        ms = (time.process_time() - t0) / repeats * 1000
        out[name] = {"decode_backward_ms": round(ms, 1)}
        for key, grad in gradients(decoder).items():
            cos = torch.nn.functional.cosine_similarity(grad.flatten(1), reference[key].flatten(1))
            out[name][f"gradient_cos_{key}"] = round(float(cos.mean()), 3)
    for row in out.values():
        row["cost_vs_vae"] = round(row["decode_backward_ms"] / out["vae"]["decode_backward_ms"], 3)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", choices=("auto", "tiny", "shapes"), default="auto")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--images", type=int, default=16, help="prompts per run (one image each)")
    parser.add_argument("--cfg", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=1, help="timing repeats (median)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="fewer steps and sweep points")
    parser.add_argument(
        "--decoders-only", action="store_true", help="only the per-decoder cost and gradient table"
    )
    parser.add_argument(
        "--weights", default=None, help="micro-world weights folder (default: shipped)"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.quick:
        args.steps, args.repeats = min(args.steps, 10), 1

    world = build_world(args.world, args.images, args.weights)
    bench = Bench(world, args.steps, args.cfg, args.seed)
    guide = world.guide
    decoders = {"linear": _linear_decoder(world), "tiny": world.tiny_decoder}
    costs = decoder_costs(world, decoders)
    for name, row in costs.items():
        print(f"decoder {name:6s} {_label(row)}", flush=True)
    if args.decoders_only:
        print(json.dumps({"benchmark": "guidance", "world": world.name, "decoders": costs}))
        return 0
    bench.generate(None)  # warm-up
    base_images, _, _ = bench.generate(None)
    base = bench.scores(base_images)
    print(f"# world={world.name} steps={args.steps} images={len(world.prompts)} cfg={args.cfg}")
    print(f"# unguided: guide_sim={float(base['guide'].mean()):.4f}", end="")
    if "judge" in base:
        print(f" judge_sim={float(base['judge'].mean()):.4f}", end="")
    if "oracle" in base:
        print(f" oracle_acc={float(base['oracle'].mean()):.3f}", end="")
    print(flush=True)

    defaults = GuidanceSettings()
    base_setting = {
        k: getattr(defaults, k) for k in ("mode", "scale", "views", "start", "stop", "every")
    }
    modes = {}
    for mode in ("fast", "full"):
        settings = {**base_setting, "mode": mode}
        modes[mode] = {
            **settings,
            **bench.measure(CLIPGuidance(guide, **settings), base, args.repeats),
        }
        print(f"mode {mode:4s} {_label(modes[mode])}", flush=True)

    half = max(1, world.pipe.unet.config.sample_size // 2)
    variations: list[dict] = [
        {"scale": 1.0},
        {"scale": 2.0},
        {"scale": 8.0},
        {"every": 1},
        {"every": 4},
        {"every": 10},
        {"views": 4},
        {"start": 0.0, "stop": 0.5},
        {"start": 0.5, "stop": 1.0},
        {"start": 0.0, "stop": 1.0},
        {"start": 0.0, "stop": 1.0, "every": 1, "scale": 0.5},
        {"start": 0.0, "stop": 0.1, "every": 1},
        {"decode_size": half},
        {"decoder": "linear"},
        {"decoder": "linear", "every": 1},
        {"decoder": "linear", "every": 4},
        {"decoder": "linear", "scale": 8.0},
    ]
    if world.tiny_decoder is not None:  # the distilled AutoencoderTiny (the TAESD role)
        variations += [
            {"decoder": "tiny"},
            {"decoder": "tiny", "every": 1},
            {"decoder": "tiny", "every": 4},
            {"decoder": "tiny", "every": 5},
            {"decoder": "tiny", "every": 5, "scale": 8.0},
            {"decoder": "tiny", "every": 10},
        ]
    if args.quick:
        variations = [variations[i] for i in (1, 4, 11)]
    sweep = []
    for change in variations:
        settings = {**base_setting, **change}
        kwargs = {**settings}
        if "decoder" in settings:
            kwargs["decoder"] = decoders[settings["decoder"]]
        row = {**settings, **bench.measure(CLIPGuidance(guide, **kwargs), base, args.repeats)}
        sweep.append(row)
        print(f"sweep {_label(row)}", flush=True)

    key = "judge_gain" if world.judge is not None else "guide_gain"
    rows = [*modes.values(), *sweep]
    cheap = [  # a real gain: the held-out judge's mean gain is over two standard errors
        r
        for r in rows
        if r["mode"] == "fast" and r["cpu_ratio"] <= 1.10 and r[key] > 2 * r[f"{key}_se"]
    ]
    best_cheap = max(cheap, key=lambda r: r[key]) if cheap else None
    bon = best_of_n(bench, (2, 4), base)
    for name, row in bon.items():
        print(f"{name} {_label(row)}", flush=True)
    print(f"# best fast setting at <= 1.10x with {key} > 2 standard errors: {best_cheap}")
    result = {
        "benchmark": "guidance",
        "world": world.name,
        "steps": args.steps,
        "images": len(world.prompts),
        "unguided": {k: round(float(v.mean()), 4) for k, v in base.items()},
        "modes": modes,
        "sweep": sweep,
        "best_of_n": bon,
        "decoders": costs,
        "fast_under_1_10x": best_cheap,
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
