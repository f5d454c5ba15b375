"""Best-of-N generation: make N images with recorded seeds and keep them sorted by a judge."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from clipguide.scoring import CLIPScorer, RobustScores, rank

__all__ = ["BestOfN", "best_of_n"]


@dataclass(frozen=True)
class BestOfN:
    """Generated images sorted by score, best first, with the seed that regenerates each.

    ``pipe(prompt, generator=result.generator(i), **same_kwargs)`` reproduces ``images[i]``.
    """

    prompt: str
    images: list[Any]
    scores: torch.Tensor
    seeds: list[int]
    generation_order: list[int]
    robust: RobustScores | None = None
    generator_device: str = "cpu"

    def generator(self, i: int) -> torch.Generator:
        """A fresh generator seeded to regenerate ``images[i]``."""
        return torch.Generator(device=self.generator_device).manual_seed(self.seeds[i])


def best_of_n(
    pipe: Any,
    prompt: str,
    n: int,
    scorer: CLIPScorer,
    *,
    batch_size: int = 1,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    generator_device: str = "cpu",
    robust: bool = False,
    progress: bool = True,
    **pipe_kwargs: Any,
) -> BestOfN:
    """Generate ``n`` images of ``prompt`` and return them sorted by the scorer, best first.

    Image ``i`` is generated with its own generator seeded ``seed + i`` (or with seeds drawn
    from ``generator``, or from torch's global RNG when neither is given), so any image can be
    regenerated alone with :meth:`BestOfN.generator`.
    """
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a str, got {type(prompt).__name__}")
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if seed is not None and generator is not None:
        raise ValueError("pass seed or generator, not both")
    for reserved in ("generator", "num_images_per_prompt", "prompt"):
        if reserved in pipe_kwargs:
            raise ValueError(f"{reserved!r} is set by best_of_n; do not pass it in pipe_kwargs")
    if seed is not None:
        seeds = [seed + i for i in range(n)]
    else:
        seeds = torch.randint(0, 2**62, (n,), generator=generator).tolist()
    images: list[Any] = []
    batches = [seeds[i : i + batch_size] for i in range(0, n, batch_size)]
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, unit="batch", desc="best_of_n")
    for batch in batches:
        generators = [torch.Generator(device=generator_device).manual_seed(s) for s in batch]
        out = pipe(prompt, num_images_per_prompt=len(batch), generator=generators, **pipe_kwargs)
        images.extend(list(out.images))  # PIL list, NHWC array or NCHW tensor
    scores = scorer.score(images, prompt)
    ranking = rank(scores)
    order = ranking.indices
    ranked = [images[i] for i in order]
    robust_scores = scorer.robust_scores(ranked, prompt) if robust else None
    return BestOfN(
        prompt=prompt,
        images=ranked,
        scores=ranking.scores,
        seeds=[seeds[i] for i in order],
        generation_order=order,
        robust=robust_scores,
        generator_device=generator_device,
    )
