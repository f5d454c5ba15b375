"""encode_prompt on other targets: the project's tiny fixtures, SD 1.x, SD3 and a bare CLIP."""

import numpy as np
import pytest
import torch
from diffusers import (
    AutoencoderKL,
    FlowMatchEulerDiscreteScheduler,
    SD3Transformer2DModel,
    StableDiffusion3Pipeline,
)
from transformers import CLIPTextConfig, CLIPTextModelWithProjection

from clipguide import testing
from clipguide.conditioning import encode_prompt

PROMPTS = ["a red cube on grass", "two blue spheres, night"]
NEG = ["blurry", "dark"]
KW = {"num_inference_steps": 2, "guidance_scale": 4.0, "output_type": "np"}


def _close(a, b):
    assert a.shape == b.shape and a.dtype == b.dtype
    assert (a - b).abs().max().item() <= 1e-6


def _clip_with_projection(hidden, seed):
    torch.manual_seed(seed)
    cfg = CLIPTextConfig(
        vocab_size=49408,
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=1,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=3,
        num_attention_heads=4,
        projection_dim=hidden,
        hidden_act="gelu",
    )
    return CLIPTextModelWithProjection(cfg).eval()


@pytest.fixture(scope="module")
def sd3():
    """Tiny SD3 without T5 (``text_encoder_3=None``: the pipeline then uses zeros for T5)."""
    torch.manual_seed(0)
    transformer = SD3Transformer2DModel(
        sample_size=16,
        patch_size=1,
        in_channels=4,
        num_layers=1,
        attention_head_dim=8,
        num_attention_heads=4,
        caption_projection_dim=32,
        joint_attention_dim=64,
        pooled_projection_dim=16 + 32,
        out_channels=4,
    )
    vae = AutoencoderKL(
        block_out_channels=(8,),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",),
        up_block_types=("UpDecoderBlock2D",),
        latent_channels=4,
        norm_num_groups=4,
        sample_size=16,
        shift_factor=0.06,
        scaling_factor=1.5,
        use_quant_conv=False,
        use_post_quant_conv=False,
    )
    pipe = StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=vae,
        text_encoder=_clip_with_projection(16, 1),
        tokenizer=testing.offline_tokenizer(),
        text_encoder_2=_clip_with_projection(32, 2),
        tokenizer_2=testing.offline_tokenizer(),
        text_encoder_3=None,
        tokenizer_3=None,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_sd3_clip_part_matches_pipeline(sd3):
    cond = encode_prompt(sd3, PROMPTS, NEG, num_images_per_prompt=2, cache=False)
    with torch.no_grad():
        ref = sd3.encode_prompt(PROMPTS, None, None, negative_prompt=NEG, num_images_per_prompt=2)
    for got, want in zip(
        (
            cond.prompt_embeds,
            cond.negative_prompt_embeds,
            cond.pooled_prompt_embeds,
            cond.negative_pooled_prompt_embeds,
        ),
        ref,
        strict=True,
    ):
        _close(got, want)
    assert cond.prompt_embeds.shape == (4, 77 + 256, 64)  # CLIP-L ⊕ bigG padded, then T5
    assert cond.pooled_prompt_embeds.shape == (4, 16 + 32)


def test_sd3_images_bit_identical_and_long_prompts_run(sd3):
    kw = dict(KW, height=16, width=16)
    ref = sd3(prompt=PROMPTS[0], generator=torch.Generator().manual_seed(1), **kw)
    got = sd3(
        **encode_prompt(sd3, PROMPTS[0], cache=False),
        generator=torch.Generator().manual_seed(1),
        **kw,
    )
    assert np.array_equal(ref.images, got.images)
    long = ", ".join(["a (tiny:1.2) red cube"] * 25)
    cond = encode_prompt(sd3, long, cache=False)
    assert cond.prompt_embeds.shape[1] == 77 * 2 + 256
    assert np.isfinite(sd3(**cond, **kw).images).all()


@pytest.fixture(scope="module")
def sd15():
    pipe = testing.tiny_sd_pipeline()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_sd15_matches_pipeline(sd15):
    cond = encode_prompt(sd15, PROMPTS, NEG, num_images_per_prompt=2, cache=False)
    with torch.no_grad():
        pe, ne = sd15.encode_prompt(PROMPTS, "cpu", 2, True, negative_prompt=NEG)
    _close(cond.prompt_embeds, pe)
    _close(cond.negative_prompt_embeds, ne)
    assert list(cond) == ["prompt_embeds", "negative_prompt_embeds"]  # no pooled for SD 1.x


def test_sd15_clip_skip(sd15):
    # diffusers 0.42's own clip_skip path fails with transformers 5 (CLIPTextModel has no
    # .text_model any more), so the reference is written out: layer -(k+1), then final norm
    cond = encode_prompt(sd15, PROMPTS, clip_skip=1, cache=False)
    te = sd15.text_encoder
    ids = sd15.tokenizer(PROMPTS, padding="max_length", max_length=77, return_tensors="pt")
    with torch.no_grad():
        hidden = te(ids.input_ids, output_hidden_states=True).hidden_states[-2]
        ref = te.final_layer_norm(hidden)
    _close(cond.prompt_embeds, ref)


def test_sd15_images_bit_identical(sd15):
    kw = dict(KW, height=32, width=32)
    ref = sd15(
        prompt=PROMPTS, negative_prompt=NEG, generator=torch.Generator().manual_seed(2), **kw
    )
    cond = encode_prompt(sd15, PROMPTS, NEG, cache=False)
    got = sd15(**cond, generator=torch.Generator().manual_seed(2), **kw)
    assert np.array_equal(ref.images, got.images)


def test_project_fixtures_match_pipeline():
    for pipe in (testing.tiny_sdxl_pipeline(), testing.tiny_sdxl_pipeline_bigg_only()):
        cond = encode_prompt(pipe, PROMPTS, NEG, num_images_per_prompt=2, cache=False)
        with torch.no_grad():
            ref = pipe.encode_prompt(PROMPTS, num_images_per_prompt=2, negative_prompt=NEG)
        for got, want in zip(cond.values(), (ref[0], ref[1], ref[2], ref[3]), strict=True):
            _close(got, want)


def test_bare_clip_gives_bigg_embeddings():
    clip = testing.tiny_clip(towers=("text",))
    cond = encode_prompt(clip, PROMPTS, cache=False)
    with torch.no_grad():
        ref = clip.encode_text(PROMPTS)
    _close(cond.prompt_embeds, ref.hidden_states)
    _close(cond.pooled_prompt_embeds, ref.pooled)
    empty = clip.encode_text(["", ""])
    _close(cond.negative_prompt_embeds, empty.hidden_states.detach())
