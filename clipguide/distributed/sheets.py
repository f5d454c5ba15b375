"""Best-of-N contact sheets for a sample of prompts, from the top-k rows of a scored job."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

from clipguide.cli.files import atomic_open
from clipguide.cli.generate import slug
from clipguide.distributed.ray_score import _read
from clipguide.model.images import UnreadableImageError, load_image
from clipguide.scoring.sheet import contact_sheet

__all__ = ["best_sheets"]


def best_sheets(
    top: Any,
    out: str | os.PathLike,
    *,
    sample: int = 8,
    seed: int = 0,
    thumb: int = 192,
) -> list[Path]:
    """One PNG contact sheet per prompt for ``sample`` prompts drawn (with ``seed``) from
    ``top`` (rows of :func:`top_k_rows` / :func:`top_k_per_prompt`, a pandas DataFrame or an
    Arrow table), best first, each image captioned with its CLIPScore; returns the files.
    An image that can no longer be read is left out of its sheet."""
    import pandas as pd

    if not isinstance(sample, int) or isinstance(sample, bool) or sample < 1:
        raise ValueError(f"sample must be a positive int, got {sample!r}")
    frame = top if isinstance(top, pd.DataFrame) else top.to_pandas()
    prompts = sorted(frame["prompt"].dropna().unique())
    if not prompts:
        raise ValueError("top has no scored rows: nothing to draw")
    chosen = sorted(random.Random(seed).sample(prompts, min(sample, len(prompts))))
    written = []
    for number, prompt in enumerate(chosen):
        rows = frame[frame["prompt"] == prompt].sort_values("clipscore", ascending=False)
        images, captions = [], []
        for path, score in zip(rows["path"], rows["clipscore"], strict=True):
            try:
                images.append(load_image(_read(str(path)), name=str(path)))
            except UnreadableImageError:
                continue
            captions.append(f"{score:.1f} {Path(str(path)).name}")
        if not images:
            continue
        target = Path(out) / f"{number:03d}-{slug(prompt)}.png"
        with atomic_open(target, "wb") as handle:
            contact_sheet(images, captions, thumb=thumb).save(handle, format="PNG")
        written.append(target)
    return written
