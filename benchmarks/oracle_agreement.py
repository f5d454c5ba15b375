"""How often the micro-world oracle misreads an image whose content is known, per task family.

Each seeded scene (``--per-family`` per family, all eight training families) is read three
times: its clean render; the render passed through the shipped VAE (encode to the latent
mean, decode), which blurs it as the pipeline's outputs are; and the same round trip with a
smooth random field added to the latents (``--drift``), which makes a shape's colour drift
towards a neighbouring hue and leaves faint blobs, the failures the pipeline's own samples
show. For each reading three errors are counted against the scene's ground truth:

- ``reject``: the scene's own (true) caption is judged false;
- ``accept``: a contrastive caption (one binding, count, size, shape or relation changed, and
  false of the scene's objects by the grammar's rules) is judged true;
- ``scene``: the detections differ from the objects (count, or a shape/colour/size).

``error`` is the mean of ``reject`` and ``accept``: the rate of wrong verdicts. Prints a table,
then one JSON line.

    python benchmarks/oracle_agreement.py --per-family 100

The oracle's thresholds were tuned on the scenes and drift of ``--seed 0``; the default seed
1 is held out from that.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from clipguide.shapes import Prompt, Scene, check, detect, render, sample_scene
from clipguide.shapes.grammar import (
    COLOURS,
    RELATIONS,
    SHAPES,
    SIZES,
    TRAIN_FAMILIES,
    Group,
    parse_caption,
)
from clipguide.shapes.oracle import judge

__all__ = ["contrastive_caption", "main", "measure", "scenes_for", "vae_round_trip"]

_FLIP = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}


def scenes_for(per_family: int, seed: int = 0) -> list[Scene]:
    """``per_family`` seeded scenes of every training family (disjoint from prompt_set)."""
    base = 900_000_000 + 1_000 * seed
    return [
        sample_scene(base + 100_003 * f + i, fam)
        for f, fam in enumerate(TRAIN_FAMILIES)
        for i in range(per_family)
    ]


def _variants(prompt: Prompt) -> list[Prompt]:
    """Captions one change away from ``prompt``: relation, count, colour, size, shape."""
    out = []
    if prompt.relation:
        out.append(Prompt(prompt.groups, _FLIP[prompt.relation]))
        out += [Prompt(prompt.groups, r) for r in RELATIONS if r != prompt.relation]
    for gi, g in enumerate(prompt.groups):
        alts = [Group(g.shape, n, True, g.colour, g.size) for n in range(1, 5) if n != g.count]
        alts += [Group(g.shape, g.count, g.exact, c, g.size) for c in COLOURS if c != g.colour]
        alts += [Group(g.shape, g.count, g.exact, g.colour, z) for z in SIZES if z != g.size]
        alts += [Group(s, g.count, g.exact, g.colour, g.size) for s in SHAPES if s != g.shape]
        for alt in alts:
            groups = prompt.groups[:gi] + (alt,) + prompt.groups[gi + 1 :]
            out.append(Prompt(groups, prompt.relation))
    return out


def contrastive_caption(scene: Scene) -> str | None:
    """A caption one change away from the scene's that its objects do not satisfy (seeded)."""
    false = [v for v in _variants(parse_caption(scene.caption)) if not judge(scene.objects, v).ok]
    if not false:
        return None
    return false[np.random.default_rng([scene.seed, 31]).integers(len(false))].text()


@torch.no_grad()
def vae_round_trip(
    images: Sequence[Image.Image], *, drift: float = 0.0, seed: int = 0, vae=None, batch: int = 64
) -> list[Image.Image]:
    """Encode to the latent mean and decode with the shipped VAE (or ``vae``), as uint8 PIL.

    ``drift`` > 0 adds a smooth random field (4x4 Gaussian noise, bilinearly upsampled) of
    ``drift`` times the latents' standard deviation before decoding: colours then drift
    within a shape and faint blobs appear, as in the pipeline's own samples.
    """
    from diffusers import AutoencoderKL

    from clipguide.shapes.shipped import WEIGHTS_DIR
    from clipguide.shapes.training.data import uint8_batch

    if vae is None:
        vae = AutoencoderKL.from_pretrained(WEIGHTS_DIR / "vae", torch_dtype=torch.float32)
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(0, len(images), batch):
        x = uint8_batch(images[i : i + batch]).float() / 127.5 - 1.0
        z = vae.encode(x).latent_dist.mean
        if drift > 0:
            field = torch.randn(z.shape[0], z.shape[1], 4, 4, generator=g)
            field = torch.nn.functional.interpolate(field, size=z.shape[-2:], mode="bilinear")
            z = z + drift * z.std() * field
        y = vae.decode(z).sample
        arr = ((y.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1)
        out += [Image.fromarray(a) for a in arr.numpy()]
    return out


def _scene_matches(scene: Scene, image) -> bool:
    """Detections equal the scene's objects one to one (shape, colour, size, near centre)."""
    found = detect(image)
    if len(found) != len(scene.objects):
        return False
    for o in scene.objects:
        near = [d for d in found if abs(d.cx - o.cx) <= 2.5 and abs(d.cy - o.cy) <= 2.5]
        if [(d.shape, d.colour, d.size) for d in near] != [(o.shape, o.colour, o.size)]:
            return False
    return True


def measure(scenes: Sequence[Scene], images: Sequence) -> dict[str, dict[str, float]]:
    """Per family (and ``all``): reject, accept, error and scene rates, and ``n``."""
    rows = []
    for scene, image in zip(scenes, images, strict=True):
        wrong = contrastive_caption(scene)
        reject = not check(image, scene.caption).ok
        accept = wrong is not None and check(image, wrong).ok
        rows.append((scene.family, reject, accept, not _scene_matches(scene, image)))
    out = {}
    for fam in [*dict.fromkeys(r[0] for r in rows), "all"]:
        sel = np.array([r[1:] for r in rows if fam in (r[0], "all")], dtype=float)
        reject, accept, scene = sel.mean(0)
        out[fam] = {
            "n": len(sel),
            "reject": round(float(reject), 4),
            "accept": round(float(accept), 4),
            "error": round(float(reject + accept) / 2, 4),
            "scene": round(float(scene), 4),
        }
    return out


def _table(results: dict) -> None:
    fams = list(results["clean"])
    print(f"{'family':14s}" + "".join(f"{r:>30s}" for r in results))
    print(f"{'':14s}" + "   reject accept  error  scene" * len(results))
    for fam in fams:
        cells = "".join(
            "".join(f"{results[r][fam][k]:7.3f}" for k in ("reject", "accept", "error", "scene"))
            + "  "
            for r in results
        )
        print(f"{fam:14s}  {cells}")


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--per-family", type=int, default=100)
    p.add_argument("--seed", type=int, default=1, help="scenes and drift field (0: tuning set)")
    p.add_argument("--drift", type=float, default=0.5, help="latent drift, in latent stds")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    if args.per_family < 1:
        p.error(f"--per-family must be >= 1, got {args.per_family}")
    if args.drift <= 0:
        p.error(f"--drift must be > 0, got {args.drift}")
    if args.threads:
        torch.set_num_threads(args.threads)
    scenes = scenes_for(args.per_family, args.seed)
    clean = [render(s) for s in scenes]
    results = {
        "clean": measure(scenes, clean),
        "vae": measure(scenes, vae_round_trip(clean)),
        "vae_drift": measure(scenes, vae_round_trip(clean, drift=args.drift, seed=args.seed)),
    }
    _table(results)
    summary = {
        "benchmark": "oracle_agreement",
        "per_family": args.per_family,
        "seed": args.seed,
        "drift": args.drift,
        **results,
    }
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
