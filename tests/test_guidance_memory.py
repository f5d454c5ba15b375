"""Guidance that fits in memory (issue 20.7): decoding at the size the CLIP needs, per-image
chunks through the decoder and CLIP, the same gradients either way."""

from __future__ import annotations

import pytest
import torch
from diffusers import AutoencoderTiny

from clipguide.guidance import CLIPGuidance, LinearLatentDecoder
from clipguide.guidance.schedulers import NoiseLevel
from clipguide.testing import SavedActivations

LEVEL = NoiseLevel(1.0, 5.0, 1.0 / 26**0.5, "epsilon", "sigma")


def _step(guidance, vae, batch, side=16, seed=0):
    """(gradient, distance, similarity, peak saved bytes) of one guided step at ``batch``."""
    gen = torch.Generator().manual_seed(seed)
    x0 = torch.randn(batch, 4, side, side, generator=gen)
    targets = guidance.targets(batch, ["a red circle"])
    with SavedActivations() as saved:
        grad, dist, sim = guidance.gradient(x0, x0, LEVEL, targets, decoder=vae)
    return grad, dist, sim, saved.peak


def test_a_default_step_saves_one_images_activations_whatever_the_batch(clip, pipe):
    guidance = CLIPGuidance(clip)
    one = _step(guidance, pipe.vae, 1)[3]
    four = _step(guidance, pipe.vae, 4)[3]
    assert 0 < four <= 1.01 * one  # was 4x: the whole batch's decoder and CLIP graphs at once
    one_pass = _step(guidance.replace(decode_chunk=None), pipe.vae, 4)[3]
    assert one_pass >= 3.5 * one


@pytest.mark.parametrize("views", [1, 3])
def test_chunks_give_the_gradients_of_one_pass(clip, pipe, views):
    """Same random views (drawn once per step), same gradients up to float rounding."""
    settings = dict(views=views, noise=0.05, decode_size=None)
    chunked = _step(CLIPGuidance(clip, decode_chunk=1, **settings), pipe.vae, 3)
    two = _step(CLIPGuidance(clip, decode_chunk=2, **settings), pipe.vae, 3)
    whole = _step(CLIPGuidance(clip, decode_chunk=None, **settings), pipe.vae, 3)
    for ours in (chunked, two):
        for a, b in zip(ours[:3], whole[:3], strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    assert not torch.equal(chunked[0][0], chunked[0][1])  # images differ, so rows matter


def test_view_draws_are_shared_by_the_chunks_of_a_batch():
    from clipguide.guidance.loss import ViewDraws, make_views

    images = torch.rand(5, 3, 12, 10)
    whole = make_views(images, 3, 8, noise=0.1, generator=torch.Generator().manual_seed(4))
    draws = ViewDraws(3, 5, noise=0.1, generator=torch.Generator().manual_seed(4))
    parts = [draws.views(images[a:b], 8, first=a) for a, b in ((0, 2), (2, 5))]
    per_view = [p.view(3, -1, 3, 8, 8) for p in parts]
    assert torch.equal(torch.cat(per_view, 1).reshape(whole.shape), whole)


def test_auto_decode_size_is_what_the_clip_needs(clip, pipe):
    guidance = CLIPGuidance(clip)  # tiny CLIP: 32 px
    assert guidance.settings.decode_size == "auto"
    assert guidance.decode_size(pipe.vae) == 16  # AutoencoderKL, 2 blocks: 2x
    tiny = AutoencoderTiny(decoder_block_out_channels=(8, 8, 8, 8), num_decoder_blocks=(1,) * 4)
    assert guidance.decode_size(tiny) == 4  # 2 ** 3 = 8x
    assert guidance.decode_size(LinearLatentDecoder(4, factor=4)) == 8
    assert guidance.decode_size(lambda z: z) is None  # unknown factor: full size
    cutouts = guidance.replace(views=4, min_crop=0.5)  # the smallest cutout covers 32 px
    assert cutouts.decode_size(pipe.vae) == 32
    assert guidance.replace(decode_size=None).decode_size(pipe.vae) is None
    assert guidance.replace(decode_size=5).decode_size(pipe.vae) == 5


def test_a_guided_run_decodes_chunks_at_the_clips_size(clip, pipe):
    """64 px SDXL images (32 latent px) for a 32 px CLIP: the guided decodes are 16 latent px,
    one image each; the pipeline's own decode stays full size."""
    seen = []
    vae_decode = pipe.vae.decode

    def spy(z, *args, **kwargs):
        seen.append(tuple(z.shape))
        return vae_decode(z, *args, **kwargs)

    pipe.vae.decode = spy
    try:
        with CLIPGuidance(clip, scale=2.0, start=0.0, stop=1.0, every=1).attach(pipe) as g:
            pipe(
                "a red circle",
                height=64,
                width=64,
                num_images_per_prompt=2,
                num_inference_steps=2,
                generator=torch.Generator().manual_seed(0),
                output_type="pt",
            )
    finally:
        del pipe.vae.decode
    assert len(g.history) == 2
    assert seen == [(1, 4, 16, 16)] * 4 + [(2, 4, 32, 32)]
