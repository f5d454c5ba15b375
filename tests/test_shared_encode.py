"""One text encode serves conditioning, scoring and guidance targets (the shared cache)."""

import torch

from clipguide import CLIPGuidance, CLIPScorer, encode_prompt, load_clip
from clipguide.model import TEXT_CACHE
from clipguide.testing import tiny_openclip_model, tiny_sdxl_pipeline_bigg_only


def test_scoring_and_guidance_reuse_the_conditioning_encode():
    pipe = tiny_sdxl_pipeline_bigg_only(seed=11)
    clip = load_clip(pipe, vision=tiny_openclip_model(seed=12))
    TEXT_CACHE.clear()
    calls = []
    handle = pipe.text_encoder_2.register_forward_hook(lambda *a: calls.append(1))
    try:
        encode_prompt(pipe, "a red circle")
        assert len(calls) == 1
        scores = CLIPScorer(clip).score(torch.rand(2, 3, 32, 32), "a red circle")
        targets = CLIPGuidance(clip).targets(2, ["a red circle"])
        assert len(calls) == 1  # neither the scorer nor the guidance ran the text tower again
    finally:
        handle.remove()
    assert scores.shape == (2,) and targets.shape == (2, clip.embed_dim)
    expected = torch.nn.functional.normalize(
        clip.encode_text("a red circle").pooled.float(), dim=-1
    )
    assert torch.allclose(targets[0], expected[0], atol=1e-6)
