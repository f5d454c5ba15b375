"""LinearLatentDecoder: a fitted affine stand-in for the VAE decoder, usable by guidance."""

import pytest
import torch

from clipguide import shapes
from clipguide.guidance import LinearLatentDecoder, decode_latents
from clipguide.shapes.training.data import uint8_batch


@pytest.fixture(scope="module")
def micro():
    pipe = shapes.pipeline(progress=False)
    images = uint8_batch(shapes.render(shapes.sample_scene(i)) for i in range(48)).float() / 255
    return pipe, images


def test_fit_approximates_the_vae_and_passes_gradients(micro):
    pipe, images = micro
    decoder = LinearLatentDecoder.fit(pipe.vae, images[:40])
    held_out = images[40:]
    with torch.no_grad():
        z = pipe.vae.encode(held_out * 2 - 1).latent_dist.mean * pipe.vae.config.scaling_factor
        reference = decode_latents(pipe.vae, z)
        fitted = decode_latents(decoder, z)
        unfitted = decode_latents(LinearLatentDecoder(4, decoder.factor), z)
    assert fitted.shape == reference.shape
    err = (fitted - reference).abs().mean()
    assert err < 0.08 and err < 0.5 * (unfitted - reference).abs().mean()
    z = z.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(decode_latents(decoder, z).sum(), z)
    assert grad.abs().sum() > 0


def test_guidance_with_the_linear_decoder_raises_similarity(micro):
    from clipguide import CLIPGuidance, load_clip

    pipe, images = micro
    clip = load_clip(pipe)  # pairs the pipeline's text tower with the shapes vision tower
    decoder = LinearLatentDecoder.fit(pipe.vae, images)
    prompts = ["a red circle left of a blue square", "two green triangles"]

    def run(guidance):
        gens = [torch.Generator().manual_seed(i) for i in range(len(prompts))]
        if guidance is None:
            return pipe(prompts, num_inference_steps=10, generator=gens, output_type="pt").images
        with guidance.attach(pipe):
            return pipe(prompts, num_inference_steps=10, generator=gens, output_type="pt").images

    def similarity(images):
        target = clip.encode_text(prompts).embeds
        return (clip.encode_image(images) * target).sum(-1)

    plain = similarity(run(None))
    guided = similarity(run(CLIPGuidance(clip, decoder=decoder, scale=8.0)))
    assert guided.mean() > plain.mean()
