"""Training data for the micro world: a seeded pool of rendered scenes with captions."""

from __future__ import annotations

import logging
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clipguide.cli.files import atomic_open
from clipguide.shapes.render import render
from clipguide.shapes.scenes import Scene, ShapeObject, sample_scene

__all__ = ["ScenePool", "build_pool", "load_cache", "load_tensors", "uint8_batch"]

log = logging.getLogger(__name__)


@dataclass
class ScenePool:
    """``images`` uint8 (N, 3, 64, 64); ``captions`` and ``scenes`` aligned with it."""

    images: torch.Tensor
    captions: list[str]
    scenes: list[Scene]

    def __len__(self) -> int:
        return len(self.captions)

    def caption_ids(self) -> tuple[list[str], torch.Tensor]:
        """Unique captions (sorted) and, per sample, the index of its caption."""
        unique = sorted(set(self.captions))
        index = {c: i for i, c in enumerate(unique)}
        return unique, torch.tensor([index[c] for c in self.captions])

    def to_state(self) -> dict[str, Any]:
        """Plain tensors, strings and tuples only: loadable with ``weights_only=True``."""
        scenes = [
            (s.caption, s.family, [_object_row(o) for o in s.objects], list(s.background), s.seed)
            for s in self.scenes
        ]
        return {"images": self.images, "captions": list(self.captions), "scenes": scenes}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> ScenePool:
        scenes = [
            Scene(cap, fam, tuple(ShapeObject(*row) for row in objs), tuple(bg), seed)
            for cap, fam, objs, bg, seed in state["scenes"]
        ]
        return cls(state["images"], list(state["captions"]), scenes)


def _object_row(o: ShapeObject) -> list:
    return [o.shape, o.colour, o.size, o.cx, o.cy, o.extent]


def load_tensors(path: str | Path) -> Any:
    """``torch.load`` of a file of plain tensors/containers; pickled code is refused.

    Raises ValueError naming the file when it holds anything but tensors, numbers, strings
    and their lists/tuples/dicts (``weights_only=True``): a training folder may come from
    elsewhere, and unpickling arbitrary objects runs arbitrary code.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        lines = [ln for ln in str(err).splitlines() if "GLOBAL" in ln] or str(err).splitlines()
        raise ValueError(
            f"refusing to load {str(path)!r}: it holds more than plain tensors and containers "
            f"(only weights_only=True loads are accepted): {lines[0] if lines else err!r}"
        ) from None


def load_cache(path: Path, convert=lambda state: state) -> Any | None:
    """A cache file's content through ``convert``; None (rebuild) if it is missing, or with a
    warning if it cannot be read safely or has the wrong layout (e.g. an older format)."""
    if not path.exists():
        return None
    try:
        return convert(load_tensors(path))
    except (ValueError, KeyError, TypeError) as err:
        log.warning("rebuilding the cache %s: %s", path, err)
        return None


def uint8_batch(images) -> torch.Tensor:
    """PIL images -> one uint8 tensor (N, 3, H, W) (distinct from the model layer's
    ``to_tensor``, which turns one image into floats in [0, 1])."""
    arr = np.stack([np.asarray(im.convert("RGB")) for im in images])
    return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()


def build_pool(n: int, seed: int, *, progress: bool = False, cache_dir=None) -> ScenePool:
    """``n`` scenes with seeds ``seed * 10_000_019 + i`` (families drawn per scene).

    With ``cache_dir``, the pool is saved there once and reloaded on later calls; a cache that
    cannot be read safely (an older pickled format, or anything else) is rebuilt, with a warning.
    """
    from tqdm.auto import tqdm

    path = Path(cache_dir) / f"pool_{seed}_{n}.pt" if cache_dir is not None else None
    cached = load_cache(path, ScenePool.from_state) if path is not None else None
    if cached is not None:
        return cached

    scenes = [sample_scene(seed * 10_000_019 + i) for i in tqdm(range(n), disable=not progress)]
    images = uint8_batch(render(s) for s in scenes)
    pool = ScenePool(images, [s.caption for s in scenes], scenes)
    if path is not None:
        with atomic_open(path, "wb") as handle:  # makes the folder; replaced whole
            torch.save(pool.to_state(), handle)
    return pool
