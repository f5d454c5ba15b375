"""Training data for the micro world: a seeded pool of rendered scenes with captions."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .scenes import Scene, render, sample_scene

__all__ = ["ScenePool", "build_pool", "to_tensor"]


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


def to_tensor(images) -> torch.Tensor:
    """PIL images -> uint8 tensor (N, 3, H, W)."""
    arr = np.stack([np.asarray(im.convert("RGB")) for im in images])
    return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()


def build_pool(n: int, seed: int, *, progress: bool = False, cache_dir=None) -> ScenePool:
    """``n`` scenes with seeds ``seed * 10_000_019 + i`` (families drawn per scene).

    With ``cache_dir``, the pool is saved there once and reloaded on later calls.
    """
    from pathlib import Path

    from tqdm.auto import tqdm

    path = Path(cache_dir) / f"pool_{seed}_{n}.pt" if cache_dir is not None else None
    if path is not None and path.exists():
        return torch.load(path, weights_only=False)

    scenes = [sample_scene(seed * 10_000_019 + i) for i in tqdm(range(n), disable=not progress)]
    images = to_tensor(render(s) for s in scenes)
    pool = ScenePool(images, [s.caption for s in scenes], scenes)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(pool, path.with_suffix(".tmp"))
        path.with_suffix(".tmp").replace(path)
    return pool
