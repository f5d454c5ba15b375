"""The modular SDXL denoise-loop block matches the hook on the stock pipeline."""

from __future__ import annotations

import pytest
import torch
from diffusers import ClassifierFreeGuidance
from diffusers.modular_pipelines import StableDiffusionXLAutoBlocks

from clipguide.guidance import CLIPGuidance
from clipguide.guidance.modular import CLIPGuidanceLoopStep, add_to_modular_sdxl
from clipguide.testing import tiny_clip, tiny_sdxl_pipeline

PROMPT = ["a red circle", "a blue square"]


def _modular(stock, guidance):
    blocks = StableDiffusionXLAutoBlocks()
    if guidance is not None:
        loop = add_to_modular_sdxl(blocks, guidance)
        names = ["before_denoiser", "denoiser", "clip_guidance", "after_denoiser"]
        assert list(loop.sub_blocks) == names
    pipe = blocks.init_pipeline()
    parts = (
        "unet",
        "vae",
        "text_encoder",
        "text_encoder_2",
        "tokenizer",
        "tokenizer_2",
        "scheduler",
    )
    pipe.update_components(**{k: getattr(stock, k) for k in parts})
    pipe.update_components(guider=ClassifierFreeGuidance(guidance_scale=5.0))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _call(pipe, modular):
    kw = dict(num_inference_steps=3, generator=torch.Generator().manual_seed(0), output_type="pt")
    if modular:
        return pipe(prompt=PROMPT, output="images", **kw)
    return pipe(PROMPT, guidance_scale=5.0, **kw).images


def test_modular_block_matches_stock_hook():
    stock = tiny_sdxl_pipeline()
    stock.set_progress_bar_config(disable=True)
    clip = tiny_clip(seed=5)
    settings = dict(scale=300.0, start=0.0, stop=1.0, every=1, normalize=False)
    in_loop = CLIPGuidance(clip, **settings)
    modular = _modular(stock, in_loop)
    guided = _call(modular, True)
    with CLIPGuidance(clip, **settings).attach(stock) as hooked:
        reference = _call(stock, False)
    torch.testing.assert_close(guided, reference, atol=1e-4, rtol=1e-4)
    assert len(in_loop.history) == len(hooked.history) == 3
    unguided = _call(stock, False)
    assert (guided - unguided).abs().max() > 1e-3

    zero = _call(_modular(stock, CLIPGuidance(clip, scale=0.0)), True)
    assert torch.equal(zero, _call(_modular(stock, None), True))
    watcher = CLIPGuidance(clip, scale=0.0, record=True, start=0.0, stop=1.0, every=1)
    assert torch.equal(_call(_modular(stock, watcher), True), zero)  # measured, not changed
    assert [r["step"] for r in watcher.history] == [0, 1, 2]


def test_modular_block_rejects_full_mode():
    with pytest.raises(ValueError, match="mode='full'"):
        CLIPGuidanceLoopStep(CLIPGuidance(tiny_clip(), mode="full"))
