"""The micro world's held-out evaluation protocol: dev/test splits, cached candidates, paired stats.

- **Splits.** ``dev`` (tune anything on it), ``test`` (fixed, versioned, used only for the
  figures published in docs/measurements.md) and ``test2`` (frozen later, once ``test`` had
  been looked at more than once for one method, to confirm its figures on unseen items) are
  lists of (caption, family, seed) items in ``benchmarks/splits/shapes_{dev,test,test2}.jsonl``;
  their SHA-256 is pinned below, so a change to the scene generator cannot move them silently.
  Prompts come from disjoint prompt seeds and the sampling seeds from disjoint ranges, so no
  test image was ever generated while tuning.
- **Candidates.** Candidate ``j`` of item ``i`` is sampled with seed ``item.seed + j``
  (``j < MAX_CANDIDATES``); candidate 0 is the plain sample. A mode (plain, a guidance
  setting...) generates candidates once per split; they are cached as uint8 arrays under
  ``--cache`` (default ``runs/eval_cache``) keyed by the split, the mode's key, the candidate
  index and a fingerprint of the shipped weights, so best-of-2 and best-of-4 reuse best-of-1's
  images and every selection method sees the same candidates.
- **Measures.** Per candidate: the oracle's verdict, and the cosine of the guide CLIP (which
  guides and picks) and of the held-out judge CLIP (which never does). Differences between
  modes are paired over the same items, with the standard error of the mean paired difference.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

SPLITS_DIR = Path(__file__).resolve().parent / "splits"
MAX_CANDIDATES = 8
# split -> (prompts per family, prompt seed, first sampling seed); seeds stride MAX_CANDIDATES
SPLIT_SPECS = {
    "dev": (60, 11, 1_000_000),
    "test": (110, 22, 2_000_000),
    # a second test split, frozen on 2026-12-07 after "test" had been used twice for the regions
    # policy's best-of-4 figures: run once to confirm them on images nothing was seen on
    "test2": (110, 33, 3_000_000),
}
SPLIT_SHA256 = {  # pinned when the files were frozen; a change must be deliberate
    "dev": "8b25b6323978425974009b5e90556efce0777602664218c13bb69a01302c5638",
    "test": "c8f665cd7b60f520f662f710ceb5a1999c14c3dd0d7737a2f7a6354320bfa0f2",
    "test2": "638010014b099f4544d82d553528666e05e21e3e2d9888d41234bed0e8d479d0",
}


@dataclass(frozen=True)
class Item:
    """One evaluation item: a caption of a family, and the seed of its first candidate."""

    caption: str
    family: str
    seed: int


def make_split(name: str) -> list[Item]:
    """Build a split from its spec (the frozen files are what evaluations read)."""
    from clipguide.shapes import prompt_set

    per_family, prompt_seed, first = SPLIT_SPECS[name]
    scenes = prompt_set(per_family, seed=prompt_seed)
    return [Item(s.caption, s.family, first + MAX_CANDIDATES * i) for i, s in enumerate(scenes)]


def split_path(name: str) -> Path:
    return SPLITS_DIR / f"shapes_{name}.jsonl"


def write_split(name: str) -> Path:
    """Freeze a split to its JSONL file (done once; then its hash is pinned)."""
    path = split_path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(item.__dict__, sort_keys=True) for item in make_split(name)]
    path.write_text("\n".join(lines) + "\n")
    return path


def load_split(name: str, limit: int | None = None) -> list[Item]:
    """The frozen split (checked against its pinned hash); ``limit`` keeps a family-balanced
    prefix (the first ``limit // 7`` items of each family) for quick runs."""
    if name not in SPLIT_SPECS:
        raise ValueError(f"split={name!r} is not one of {sorted(SPLIT_SPECS)}")
    path = split_path(name)
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    pinned = SPLIT_SHA256.get(name)
    if pinned is not None and digest != pinned:
        raise RuntimeError(f"{path} changed: sha256 {digest} != pinned {pinned}")
    items = [Item(**json.loads(line)) for line in data.decode().splitlines() if line.strip()]
    if limit is not None:
        families = list(dict.fromkeys(i.family for i in items))
        per = max(1, limit // len(families))
        items = [i for f in families for i in [x for x in items if x.family == f][:per]]
    return items


# -- generation --------------------------------------------------------------------------------
Sampler = Callable[[Any, list[str], list[int], dict], list]


def weights_fingerprint(folder: Path) -> str:
    """Short hash of every weights file under ``folder`` (names, sizes and bytes)."""
    h = hashlib.sha256()
    for f in sorted(folder.rglob("*")):
        if f.is_file():
            h.update(str(f.relative_to(folder)).encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:12]


def to_uint8(images: Sequence[Any]) -> np.ndarray:
    """PIL images or float CHW tensors in [0, 1] -> uint8 (N, H, W, 3)."""
    out = []
    for im in images:
        if isinstance(im, torch.Tensor):
            arr = (im.detach().float().clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
        else:
            arr = np.asarray(im.convert("RGB"))
        out.append(arr)
    return np.stack(out)


class CandidateStore:
    """Generates and caches candidate images per (split, mode, candidate index)."""

    def __init__(self, pipe: Any, cache: Path, fingerprint: str, batch: int = 35) -> None:
        self.pipe, self.cache, self.fingerprint, self.batch = pipe, Path(cache), fingerprint, batch
        self.cache.mkdir(parents=True, exist_ok=True)
        self.seconds: dict[str, float] = {}

    def path(self, split: str, mode_key: str, j: int, n_items: int) -> Path:
        safe = hashlib.sha256(mode_key.encode()).hexdigest()[:10]
        return self.cache / f"{split}-{n_items}-{self.fingerprint}-{safe}-c{j}.npy"

    def candidates(
        self, split: str, items: list[Item], mode_key: str, sampler: Sampler, n: int, ctx: dict
    ) -> np.ndarray:
        """uint8 (len(items), n, H, W, 3): candidates 0..n-1 of every item."""
        if n > MAX_CANDIDATES:
            raise ValueError(f"n={n} exceeds MAX_CANDIDATES={MAX_CANDIDATES}")
        per_j = []
        for j in range(n):
            path = self.path(split, mode_key, j, len(items))
            if path.exists():
                per_j.append(np.load(path))
                continue
            t0 = time.perf_counter()
            images: list = []
            for k in range(0, len(items), self.batch):
                chunk = items[k : k + self.batch]
                images += sampler(
                    self.pipe, [i.caption for i in chunk], [i.seed + j for i in chunk], ctx
                )
            self.seconds[f"{mode_key}/c{j}"] = time.perf_counter() - t0
            arr = to_uint8(images)
            tmp = path.with_suffix(".tmp.npy")
            np.save(tmp, arr)
            tmp.replace(path)
            per_j.append(arr)
        return np.stack(per_j, axis=1)


# -- measures ----------------------------------------------------------------------------------
@dataclass
class Measures:
    """Per candidate (items x n): oracle verdict, guide and judge cosine."""

    ok: np.ndarray
    guide: np.ndarray
    judge: np.ndarray


def measure(candidates: np.ndarray, items: list[Item], guide: Any, judge: Any) -> Measures:
    """Oracle verdicts and guide/judge cosines of every candidate (scorers: ``CLIPScorer``)."""
    from clipguide.shapes import check

    n_items, n = candidates.shape[:2]
    flat = [candidates[i, j] for i in range(n_items) for j in range(n)]
    prompts = [items[i].caption for i in range(n_items) for _ in range(n)]
    ok = np.array([check(im, p).ok for im, p in zip(flat, prompts, strict=True)])
    with torch.no_grad():
        g = guide.cosine(flat, prompts).numpy()
        jd = judge.cosine(flat, prompts).numpy()
    return Measures(ok.reshape(n_items, n), g.reshape(n_items, n), jd.reshape(n_items, n))


def pick(scores: np.ndarray) -> np.ndarray:
    """Index of the best candidate per item (first on ties)."""
    return np.argmax(scores, axis=1)


def chosen(m: Measures, index: np.ndarray) -> Measures:
    """The measures of one chosen candidate per item (items x 1)."""
    rows = np.arange(len(index))
    return Measures(
        m.ok[rows, index][:, None], m.guide[rows, index][:, None], m.judge[rows, index][:, None]
    )


# -- statistics --------------------------------------------------------------------------------
def paired(a: np.ndarray, b: np.ndarray, scale: float = 100.0) -> tuple[float, float]:
    """Mean of ``a - b`` over the same items and its standard error, times ``scale``."""
    d = (np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)).ravel()
    se = d.std(ddof=1) / math.sqrt(len(d)) if len(d) > 1 else float("nan")
    return float(scale * d.mean()), float(scale * se)


def accuracy_by_family(ok: np.ndarray, items: list[Item]) -> dict[str, float]:
    out: dict[str, float] = {}
    for fam in dict.fromkeys(i.family for i in items):
        mask = np.array([i.family == fam for i in items])
        out[fam] = float(ok[mask].mean())
    out["overall"] = float(ok.mean())
    return out


def equal_guide_score(mode: Measures, base: Measures, bins: int = 4) -> tuple[float, float]:
    """Oracle accuracy of ``mode`` minus ``base`` at equal guide score, in points ± SE.

    The guide cosines are cut into ``bins`` bins at the quantiles of ``base``'s scores; within
    each bin the two accuracies are compared, and the differences are averaged with the
    weights of ``mode``'s images per bin (the standard error treats bins as independent).
    """
    edges = np.quantile(base.guide.ravel(), np.linspace(0, 1, bins + 1)[1:-1])
    bm = np.digitize(mode.guide.ravel(), edges)
    bb = np.digitize(base.guide.ravel(), edges)
    okm, okb = mode.ok.ravel().astype(float), base.ok.ravel().astype(float)
    cells = []  # (weight, difference, variance) of the bins both modes reach
    for k in range(bins):
        nm, nb = int((bm == k).sum()), int((bb == k).sum())
        if nm and nb:
            pm, pb = okm[bm == k].mean(), okb[bb == k].mean()
            cells.append((nm, pm - pb, pm * (1 - pm) / nm + pb * (1 - pb) / nb))
    total = sum(w for w, _, _ in cells)
    diff = sum(w * d for w, d, _ in cells) / total
    var = sum(w * w * v for w, _, v in cells) / total**2
    return 100 * diff, 100 * math.sqrt(var)
