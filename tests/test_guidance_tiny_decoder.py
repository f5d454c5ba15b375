"""The micro world's distilled AutoencoderTiny as a guidance decoder (the TAESD role)."""

import pytest
import torch
from diffusers import AutoencoderTiny

from clipguide import CLIPGuidance, load_clip, shapes
from clipguide.guidance import decode_latents
from clipguide.guidance.schedulers import NoiseLevel
from clipguide.shapes.training.data import build_pool
from clipguide.shapes.training.unet import encode_latents


@pytest.fixture(scope="module")
def micro():
    pipe = shapes.pipeline(progress=False)
    return pipe, load_clip(pipe), shapes.load_tiny_decoder()


def _held_out_latents(vae, n: int = 24) -> tuple[torch.Tensor, list[str]]:
    pool = build_pool(n, 777)  # seeds the decoder never saw
    with torch.no_grad():
        return encode_latents(vae, pool.images), pool.captions


def test_tiny_decoder_is_a_frozen_stock_autoencoder_tiny_close_to_the_vae(micro):
    pipe, _, tiny = micro
    assert isinstance(tiny, AutoencoderTiny) and not tiny.training
    assert not any(p.requires_grad for p in tiny.parameters())
    assert tiny.dtype == torch.float32
    z, _ = _held_out_latents(pipe.vae)
    with torch.no_grad():
        ref, mine = decode_latents(pipe.vae, z), decode_latents(tiny, z)
    psnr = 10 * torch.log10(1 / (mine - ref).pow(2).mean())
    assert psnr > 22, psnr


def test_tiny_decoder_guidance_gradients_follow_the_vae(micro):
    pipe, clip, tiny = micro
    z, captions = _held_out_latents(pipe.vae)
    guidance = CLIPGuidance(clip)
    targets = guidance.targets(len(captions), captions)
    level = NoiseLevel(1.0, 1.0, 1.0, "epsilon", "sigma")
    via_vae = guidance.gradient(z, z, level, targets, decoder=pipe.vae)[0]
    via_tiny = guidance.gradient(z, z, level, targets, decoder=tiny)[0]
    cos = torch.nn.functional.cosine_similarity(via_vae.flatten(1), via_tiny.flatten(1))
    assert cos.mean() > 0.5, cos


def test_guidance_with_the_tiny_decoder_raises_similarity(micro):
    pipe, clip, tiny = micro
    prompts = ["a red circle left of a blue square", "two green triangles", "a small yellow square"]

    def run(guidance):
        gens = [torch.Generator().manual_seed(i) for i in range(len(prompts))]
        kw = dict(num_inference_steps=10, generator=gens, output_type="pt", guidance_scale=5.0)
        if guidance is None:
            return pipe(prompts, **kw).images
        with guidance.attach(pipe):
            return pipe(prompts, **kw).images

    def similarity(images):
        return (clip.encode_image(images) * clip.encode_text(prompts).embeds).sum(-1)

    plain = similarity(run(None))
    guided = similarity(run(CLIPGuidance(clip, decoder=tiny, every=1)))
    assert guided.mean() > plain.mean(), (guided, plain)
