"""Pure tensor maths for regional prompts: each attention layer's grid, region masks on it, and
the blend of the regions' attention outputs with the whole prompt's.

Conventions:

- a UNet halves its feature maps with stride-2 convolutions (kernel 3, padding 1), so a latent
  of height ``h`` becomes ``ceil(h / 2)``; an attention layer's token count ``seq_len`` is
  ``h_k * w_k`` for the level ``k`` of that chain (1344x768 -> SDXL latent 168x96 -> attention
  at 84x48 and 42x24). The grid is found by walking the chain, never by taking a square root;
- a box ``(x0, y0, x1, y1)`` (fractions of the image, origin top-left) is rasterised by *area
  coverage*: each cell gets the fraction of its area inside the box, so edges falling inside a
  coarse cell give partial weights and a box covering the image gives exactly 1 everywhere;
- a mask (H, W) of any resolution is resized to the grid by area averaging (``mode="area"``);
- overlaps are allowed: where the masks of several regions sum to more than 1 they are divided
  by that sum, so the regions share those cells and the whole prompt keeps ``blend`` of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

__all__ = [
    "attention_grid",
    "box_coverage",
    "region_masks",
    "region_shares",
    "add_region",
    "blend_regions",
]


def attention_grid(latent_hw: tuple[int, int], seq_len: int) -> tuple[int, int]:
    """The (height, width) of the attention layer with ``seq_len`` tokens on ``latent_hw`` latents.

    Raises ValueError if no level of the UNet's ceil-halving chain has ``seq_len`` cells.
    """
    h, w = int(latent_hw[0]), int(latent_hw[1])
    if h < 1 or w < 1:
        raise ValueError(f"latent_hw={tuple(latent_hw)} is not valid; accepted: two sizes >= 1")
    seen = []
    while True:
        seen.append((h, w))
        if h * w == seq_len:
            return h, w
        if h * w < seq_len or (h == 1 and w == 1):
            break
        h, w = -(-h // 2), -(-w // 2)
    raise ValueError(
        f"seq_len={seq_len} is not the token count of any attention level for latents of "
        f"{tuple(latent_hw)}; accepted: h*w for a grid of {seen} (the UNet halves with ceil "
        "rounding); the attention layer does not run on a halved latent grid"
    )


def _coverage_1d(lo: float, hi: float, cells: int) -> torch.Tensor:
    """Fraction of each of ``cells`` equal cells of [0, 1] inside [lo, hi] (in grid units, so
    a full cell is exactly 1)."""
    edges = torch.arange(cells, dtype=torch.float64)
    inside = (edges + 1).clamp(max=hi * cells) - edges.clamp(min=lo * cells)
    return inside.clamp(0.0, 1.0)


def box_coverage(
    box: Sequence[float],
    grid: tuple[int, int],
    *,
    device: Any = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """(h, w) fraction of each grid cell's area inside ``box = (x0, y0, x1, y1)``."""
    x0, y0, x1, y1 = (float(v) for v in box)
    cells = torch.outer(_coverage_1d(y0, y1, grid[0]), _coverage_1d(x0, x1, grid[1]))
    return cells.to(device=device, dtype=dtype)


def _resize_mask(mask: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """A (H, W) mask in [0, 1] averaged over each cell of ``grid``."""
    m = mask.detach().to(torch.float32)[None, None]
    if tuple(m.shape[-2:]) != tuple(grid):
        m = F.interpolate(m, size=grid, mode="area")
    return m[0, 0].clamp(0.0, 1.0)


def region_masks(
    regions: Sequence[Any],
    latent_hw: tuple[int, int],
    seq_len: int,
    *,
    device: Any = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """(R, seq_len) coverage of each region (anything with ``box`` or ``mask``) on the grid of
    the attention layer with ``seq_len`` tokens, in the layer's row-major token order."""
    grid = attention_grid(latent_hw, seq_len)
    rows = []
    for region in regions:
        if getattr(region, "box", None) is not None:
            cells = box_coverage(region.box, grid, device=device)
        else:
            cells = _resize_mask(region.mask.to(device), grid)
        rows.append(cells.reshape(-1))
    if not rows:
        return torch.zeros(0, seq_len, device=device, dtype=dtype)
    return torch.stack(rows).to(dtype)


def region_shares(masks: torch.Tensor, weights: torch.Tensor, blend: float) -> torch.Tensor:
    """(R, S) share of each region's output per token: masks divided by their sum where it
    exceeds 1, times each region's weight and ``1 - blend``."""
    total = masks.sum(0, keepdim=True).clamp(min=1.0)
    return masks / total * weights.to(masks)[:, None] * (1.0 - blend)


def add_region(
    mixed: torch.Tensor,
    whole: torch.Tensor,
    output: torch.Tensor,
    share: torch.Tensor,
    tokens: torch.Tensor | None = None,
) -> torch.Tensor:
    """``mixed + share * (output - whole)`` per token, on the ``tokens`` given or on all.

    Args:
        mixed, whole: (B, S, C): the blend so far and the whole prompt's attention output.
        output: the layer attending to one region's prompt: (B, S, C), or (B, T, C) for the
            ``T`` token indices ``tokens`` (the tokens a region covers).
        share: (S,) that region's row of :func:`region_shares`.
    """
    if tokens is None:
        return mixed + share.to(whole.dtype)[None, :, None] * (output - whole)
    delta = share[tokens].to(whole.dtype)[None, :, None] * (output - whole[:, tokens])
    return mixed.index_add(1, tokens, delta)


def blend_regions(
    whole: torch.Tensor, regional: Sequence[torch.Tensor], shares: torch.Tensor
) -> torch.Tensor:
    """``whole + sum_r shares[r] * (regional[r] - whole)`` per token.

    Args:
        whole: (B, S, C) attention output for the whole prompt.
        regional: R outputs (B, S, C), the same layer attending to each region's prompt.
        shares: (R, S) from :func:`region_shares`.
    """
    out = whole
    for r, output in enumerate(regional):
        out = add_region(out, whole, output, shares[r])
    return out
