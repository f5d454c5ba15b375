"""Region masks: each attention layer's grid from the latent size, box coverage, mask resizing."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from clipguide.conditioning import Region, region_masks
from clipguide.conditioning.region_masks import (
    attention_grid,
    blend_regions,
    box_coverage,
    region_shares,
)

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def _ceil_chain(h: int, w: int, levels: int) -> list[tuple[int, int]]:
    chain = [(h, w)]
    for _ in range(levels - 1):
        h, w = -(-h // 2), -(-w // 2)
        chain.append((h, w))
    return chain


@pytest.mark.parametrize(
    "image_hw, grids",
    [
        ((768, 1344), [(48, 84), (24, 42)]),  # 1344 wide x 768 high
        ((1344, 768), [(84, 48), (42, 24)]),
        ((1000, 600), [(63, 38), (32, 19)]),  # odd latents 125x75: ceil rounding
    ],
)
def test_sdxl_attention_grids_for_non_square_sizes(image_hw, grids):
    latent = (image_hw[0] // 8, image_hw[1] // 8)
    for grid in grids:
        assert attention_grid(latent, grid[0] * grid[1]) == grid
        masks = region_masks([Region("a", box=(0, 0, 0.5, 1))], latent, grid[0] * grid[1])
        assert masks.shape == (1, grid[0] * grid[1])
        cells = masks.reshape(grid)
        # left half of the columns covered (half a column where the edge falls in one)
        assert torch.allclose(cells[:, 0], torch.ones(grid[0]))
        assert torch.allclose(cells[:, -1], torch.zeros(grid[0]))
        assert float(cells.sum()) == pytest.approx(grid[0] * grid[1] / 2)


@pytest.fixture(scope="module")
def sdxl_unet_on_meta():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        from diffusers import UNet2DConditionModel
        from guidance_gpu import SDXL_UNET
    finally:
        sys.path.remove(str(BENCHMARKS))
        sys.modules.pop("guidance_gpu", None)
    with torch.device("meta"):
        return UNet2DConditionModel(**SDXL_UNET)


@pytest.mark.parametrize("image_hw", [(768, 1344), (1344, 768), (1000, 600)])
def test_every_sdxl_cross_attention_layer_gets_its_grid(sdxl_unet_on_meta, image_hw):
    """A real (meta-device) SDXL-base forward: every attn2 layer's token count maps to a level of
    the ceil chain, and both SDXL attention levels (latent/2, latent/4) occur."""
    unet = sdxl_unet_on_meta
    latent = (image_hw[0] // 8, image_hw[1] // 8)
    seen: list[int] = []
    layers = [m for m in unet.modules() if getattr(m, "is_cross_attention", False)]
    handles = [m.register_forward_pre_hook(lambda m, a: seen.append(a[0].shape[1])) for m in layers]
    meta = dict(device="meta")
    try:
        with torch.no_grad():
            unet(
                torch.zeros(1, 4, *latent, **meta),
                torch.tensor(500.0, **meta),
                encoder_hidden_states=torch.zeros(1, 77, 2048, **meta),
                added_cond_kwargs={
                    "text_embeds": torch.zeros(1, 1280, **meta),
                    "time_ids": torch.zeros(1, 6, **meta),
                },
            )
    finally:
        for h in handles:
            h.remove()
    assert len(seen) == len(layers) == 70
    chain = _ceil_chain(*latent, 4)
    grids = {attention_grid(latent, s) for s in seen}
    assert grids == {chain[1], chain[2]}
    for s in set(seen):
        assert region_masks([Region("a", box=(0.25, 0.25, 0.75, 0.75))], latent, s).shape == (1, s)


def test_box_coverage_is_area_coverage_and_full_box_is_exactly_one():
    assert torch.equal(box_coverage((0, 0, 1, 1), (7, 5)), torch.ones(7, 5))
    cells = box_coverage((0.1, 0.0, 0.5, 0.5), (2, 5))  # columns of width 0.2
    assert torch.allclose(cells[0], torch.tensor([0.5, 1.0, 0.5, 0.0, 0.0]))
    assert torch.equal(cells[1], torch.zeros(5))
    # total coverage is the box's area in cells
    assert float(box_coverage((0.13, 0.27, 0.61, 0.9), (9, 11)).sum()) == pytest.approx(
        0.48 * 0.63 * 99
    )


def test_masks_of_any_resolution_are_area_resized():
    mask = torch.zeros(64, 32)
    mask[:, :16] = 1.0  # left half
    cells = region_masks([Region("a", mask=mask)], (12, 20), 6 * 10).reshape(6, 10)
    assert torch.equal(cells[:, :5], torch.ones(6, 5))
    assert torch.equal(cells[:, 5:], torch.zeros(6, 5))


def test_grid_not_on_the_chain_is_refused_naming_it():
    with pytest.raises(ValueError, match=r"seq_len=50 .*\(12, 20\)"):
        attention_grid((12, 20), 50)


def test_overlaps_are_shared_and_blend_keeps_the_whole_prompt():
    masks = torch.tensor([[1.0, 1.0, 0.0], [0.0, 1.0, 0.5]])
    shares = region_shares(masks, torch.tensor([1.0, 1.0]), blend=0.25)
    assert torch.allclose(shares, torch.tensor([[0.75, 0.375, 0.0], [0.0, 0.375, 0.375]]))
    whole = torch.zeros(1, 3, 2)
    a, b = torch.ones(1, 3, 2), 2 * torch.ones(1, 3, 2)
    out = blend_regions(whole, [a, b], shares)
    assert torch.allclose(out[0, :, 0], torch.tensor([0.75, 0.375 + 0.75, 0.75]))
