"""encode_prompt against the pipelines' own encode_prompt, on tiny pipelines built from configs."""

import numpy as np
import pytest
import torch
from diffusers import (
    AutoencoderKL,
    EulerDiscreteScheduler,
    StableDiffusionXLImg2ImgPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from clipguide.conditioning import Conditioning, encode_prompt
from clipguide.conditioning.encode import weight_hidden_states
from clipguide.model.text_cache import TextEncodingCache
from clipguide.model.tokenizer import offline_tokenizer

SHORT = ["a photo of a red cube, studio light", "a blue sphere on grass"]
NEG = ["blurry", "low quality, jpeg"]


def _text_config(hidden, proj, layers=4):
    return CLIPTextConfig(
        vocab_size=49408,
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=1,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        projection_dim=proj,
        hidden_act="gelu",
    )


def _tiny_sdxl(bigg_only=False, refiner=False, seed=0):
    torch.manual_seed(seed)
    l_dim, g_dim, proj = 16, 32, 24
    cross = g_dim if bigg_only else l_dim + g_dim
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16),
        layers_per_block=1,
        sample_size=16,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 1),
        projection_class_embeddings_input_dim=(5 if refiner else 6) * 8 + proj,
        cross_attention_dim=cross,
        norm_num_groups=4,
    )
    vae = AutoencoderKL(
        block_out_channels=[8, 16],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 2,
        up_block_types=["UpDecoderBlock2D"] * 2,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=32,
    )
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1
    )
    te2 = CLIPTextModelWithProjection(_text_config(g_dim, proj)).eval()
    tok2 = offline_tokenizer()
    te = tok = None
    if not bigg_only:
        te = CLIPTextModel(_text_config(l_dim, l_dim)).eval()
        tok = offline_tokenizer()
        tok.pad_token = "<|endoftext|>"  # CLIP-L's tokenizer pads with the end token
    cls = StableDiffusionXLImg2ImgPipeline if refiner else StableDiffusionXLPipeline
    extra = {"requires_aesthetics_score": True, "force_zeros_for_empty_prompt": False}
    pipe = cls(
        vae=vae,
        text_encoder=te,
        text_encoder_2=te2,
        tokenizer=tok,
        tokenizer_2=tok2,
        unet=unet,
        scheduler=scheduler,
        **(extra if refiner else {}),
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def sdxl():
    return _tiny_sdxl()


@pytest.fixture(scope="module")
def bigg_only():
    return _tiny_sdxl(bigg_only=True)


@pytest.fixture(scope="module")
def refiner():
    return _tiny_sdxl(bigg_only=True, refiner=True)


def _reference(pipe, prompt, negative=None, n=1, clip_skip=None):
    with torch.no_grad():
        pe, ne, pp, npp = pipe.encode_prompt(
            prompt,
            num_images_per_prompt=n,
            do_classifier_free_guidance=True,
            negative_prompt=negative,
            clip_skip=clip_skip,
        )
    return {
        "prompt_embeds": pe,
        "negative_prompt_embeds": ne,
        "pooled_prompt_embeds": pp,
        "negative_pooled_prompt_embeds": npp,
    }


def _assert_close(cond, ref, keys=None):
    for key in keys or ref:
        assert cond[key].shape == ref[key].shape, key
        assert cond[key].dtype == ref[key].dtype, key
        assert (cond[key] - ref[key]).abs().max().item() <= 1e-6, key


CASES = [
    ("single", SHORT[0], None, 1),
    ("batch", SHORT, None, 1),
    ("images_per_prompt", SHORT, None, 3),
    ("negative", SHORT, NEG, 2),
    ("negative_str", SHORT, "blurry", 1),
    ("empty_negative", SHORT[0], "", 1),
]


@pytest.mark.parametrize("pipe_name", ["sdxl", "bigg_only", "refiner"])
@pytest.mark.parametrize("name, prompt, negative, n", CASES, ids=[c[0] for c in CASES])
def test_matches_pipeline_encode_prompt(request, pipe_name, name, prompt, negative, n):
    pipe = request.getfixturevalue(pipe_name)
    cond = encode_prompt(pipe, prompt, negative, num_images_per_prompt=n, cache=False)
    _assert_close(cond, _reference(pipe, prompt, negative, n))


def test_field_widths(sdxl, bigg_only):
    cond = encode_prompt(sdxl, "a cat", cache=False)
    assert cond.prompt_embeds.shape == (1, 77, 16 + 32)  # CLIP-L ⊕ bigG, penultimate layers
    assert cond.pooled_prompt_embeds.shape == (1, 24)  # bigG projected, not normalised
    assert not torch.allclose(cond.pooled_prompt_embeds.norm(dim=-1), torch.ones(1))
    assert encode_prompt(bigg_only, "a cat", cache=False).prompt_embeds.shape == (1, 77, 32)


def test_none_negative_follows_force_zeros(sdxl, refiner):
    zeros = encode_prompt(sdxl, SHORT, None, cache=False)  # force_zeros_for_empty_prompt=True
    assert not zeros.negative_prompt_embeds.any() and not zeros.negative_pooled_prompt_embeds.any()
    empty = encode_prompt(sdxl, SHORT, "", cache=False)
    assert empty.negative_prompt_embeds.abs().sum() > 0
    # refiner config says False: None encodes the empty prompt, like ""
    a, b = (
        encode_prompt(refiner, "x", None, cache=False),
        encode_prompt(refiner, "x", "", cache=False),
    )
    assert torch.equal(a.negative_prompt_embeds, b.negative_prompt_embeds)
    forced = encode_prompt(refiner, "x", None, force_zeros_for_empty_prompt=True, cache=False)
    assert not forced.negative_prompt_embeds.any()


@pytest.mark.parametrize("clip_skip", [1, 2])
def test_clip_skip(sdxl, clip_skip):
    cond = encode_prompt(sdxl, SHORT, NEG, clip_skip=clip_skip, cache=False)
    ref = _reference(sdxl, SHORT, NEG, clip_skip=clip_skip)
    _assert_close(cond, ref, ["prompt_embeds", "pooled_prompt_embeds"])
    # the negative uses the same layer (diffusers keeps the penultimate for negatives)
    neg_ref = _reference(sdxl, NEG, clip_skip=clip_skip)
    assert (cond.negative_prompt_embeds - neg_ref["prompt_embeds"]).abs().max() <= 1e-6
    assert (cond.negative_prompt_embeds - ref["negative_prompt_embeds"]).abs().max() > 1e-3
    plain = encode_prompt(sdxl, SHORT, NEG, cache=False)
    assert not torch.allclose(plain.prompt_embeds, cond.prompt_embeds)
    with pytest.raises(ValueError, match="clip_skip must be None or an int in"):
        encode_prompt(sdxl, "x", clip_skip=9)


@pytest.mark.parametrize("pipe_name", ["sdxl", "bigg_only"])
def test_pipe_call_is_bit_identical(request, pipe_name):
    sdxl = request.getfixturevalue(pipe_name)
    kw = {"num_inference_steps": 2, "guidance_scale": 5.0, "output_type": "np"}
    kw.update(height=32, width=32, num_images_per_prompt=2)
    ref = sdxl(prompt=SHORT, negative_prompt=NEG, generator=torch.Generator().manual_seed(3), **kw)
    cond = encode_prompt(sdxl, SHORT, NEG, num_images_per_prompt=2, cache=False)
    got = sdxl(
        **cond, generator=torch.Generator().manual_seed(3), **dict(kw, num_images_per_prompt=1)
    )
    assert np.array_equal(ref.images, got.images)
    kw.pop("num_images_per_prompt")
    # and with pipe's zeroed negative, through to_kwargs()
    ref = sdxl(prompt=SHORT[0], generator=torch.Generator().manual_seed(4), **kw)
    cond = encode_prompt(sdxl, SHORT[0], cache=False)
    got = sdxl(**cond.to_kwargs(), generator=torch.Generator().manual_seed(4), **kw)
    assert np.array_equal(ref.images, got.images)


def test_conditioning_is_a_frozen_mapping(sdxl):
    cond = encode_prompt(sdxl, "a cat", cache=False)
    assert isinstance(cond, Conditioning)
    assert list(cond) == [
        "prompt_embeds",
        "negative_prompt_embeds",
        "pooled_prompt_embeds",
        "negative_pooled_prompt_embeds",
    ]
    with pytest.raises(AttributeError):
        cond.prompt_embeds = None
    half = cond.to(dtype=torch.float16)
    assert half.prompt_embeds.dtype == torch.float16 and cond.prompt_embeds.dtype == torch.float32
    with pytest.raises(KeyError):
        cond["prompt"]
    assert cond == cond and "prompt_embeds=(1, 77, 48)" in repr(cond)


def test_all_weights_one_reproduces_unweighted_exactly(sdxl):
    plain = encode_prompt(sdxl, "a red cube on grass", cache=False)
    ones = encode_prompt(sdxl, "a (red:1) cube (on grass:1.0)", cache=False)
    for key in plain:
        assert torch.equal(plain[key], ones[key])


def test_weights_interpolate_from_empty(sdxl):
    prompt = "a (red:1.5) cube"
    weighted = encode_prompt(sdxl, prompt, cache=False)
    plain = encode_prompt(sdxl, "a red cube", cache=False)
    empty = encode_prompt(sdxl, "", "", cache=False).negative_prompt_embeds
    tok = sdxl.tokenizer_2
    red = len(tok("red", add_special_tokens=False)["input_ids"])
    z, z0, got = plain.prompt_embeds[0], empty[0], weighted.prompt_embeds[0]
    pos = slice(2, 2 + red)  # start token, "a", then "red"
    assert torch.allclose(got[pos], z0[pos] + 1.5 * (z[pos] - z0[pos]), atol=1e-6)
    rest = torch.ones(77, dtype=torch.bool)
    rest[pos] = False
    assert torch.equal(got[rest], z[rest])
    # the pooled embedding is the unweighted first chunk's
    assert torch.equal(weighted.pooled_prompt_embeds, plain.pooled_prompt_embeds)


def test_weight_hidden_states_function():
    hidden, empty = torch.randn(2, 5, 3), torch.randn(5, 3)
    w = torch.tensor([[1, 2, 1, 0, 1], [1, 1, 1, 1, 1.0]])
    out = weight_hidden_states(hidden, w, empty)
    assert torch.equal(out[1], hidden[1]) and torch.equal(out[0, 0], hidden[0, 0])
    assert torch.allclose(out[0, 1], 2 * hidden[0, 1] - empty[1])
    assert torch.equal(out[0, 3], empty[3])


def _n_tokens(pipe, text):
    return len(pipe.tokenizer_2(text, add_special_tokens=False)["input_ids"])


def test_long_prompt_nothing_past_77_is_dropped(sdxl):
    head = " ".join(["red cube"] * 30) + ","
    shared = " ".join(["small"] * 20)
    a, b = shared + " " + " ".join(["blue"] * 20), shared + " " + " ".join(["green"] * 20)
    assert 55 < _n_tokens(sdxl, head) <= 75 and _n_tokens(sdxl, head + " " + shared) > 77
    # the pipeline truncates: both prompts look the same to it
    ra, rb = _reference(sdxl, f"{head} {a}"), _reference(sdxl, f"{head} {b}")
    assert torch.equal(ra["prompt_embeds"], rb["prompt_embeds"])
    ca = encode_prompt(sdxl, f"{head} {a}", cache=False)
    cb = encode_prompt(sdxl, f"{head} {b}", cache=False)
    assert ca.prompt_embeds.shape == (1, 154, 48)
    assert torch.equal(ca.prompt_embeds[:, :77], cb.prompt_embeds[:, :77])
    assert (ca.prompt_embeds[:, 77:] - cb.prompt_embeds[:, 77:]).abs().max() > 1e-3
    # chunk 1 is the head up to its comma, chunk 2 the rest, each encoded on its own
    _assert_close({"x": ca.prompt_embeds[:, :77]}, {"x": _reference(sdxl, head)["prompt_embeds"]})
    _assert_close({"x": ca.prompt_embeds[:, 77:]}, {"x": _reference(sdxl, a)["prompt_embeds"]})
    # pooled comes from the first chunk
    _assert_close(
        {"x": ca.pooled_prompt_embeds}, {"x": _reference(sdxl, head)["pooled_prompt_embeds"]}
    )


def test_long_prompt_pads_batch_and_negative_to_same_length(sdxl):
    long = ", ".join(f"detail number {i}" for i in range(40))
    assert _n_tokens(sdxl, long) > 150
    cond = encode_prompt(sdxl, [long, "short"], "blurry", cache=False)
    chunks = cond.prompt_embeds.shape[1] // 77
    assert chunks >= 3 and cond.prompt_embeds.shape[1] == 77 * chunks
    assert cond.negative_prompt_embeds.shape == cond.prompt_embeds.shape
    # the short prompt and the negative are padded with chunks of the empty prompt
    empty = _reference(sdxl, "")["prompt_embeds"][0]
    for x in (cond.prompt_embeds[1], cond.negative_prompt_embeds[0]):
        for c in range(1, chunks):
            assert (x[77 * c : 77 * (c + 1)] - empty).abs().max() <= 1e-6


def test_long_prompt_runs_through_pipeline(bigg_only):
    long = " ".join(["a tiny red cube"] * 30) + " BREAK a blue sphere"
    cond = encode_prompt(bigg_only, long, "(blurry:1.3)", cache=False)
    assert cond.prompt_embeds.shape[1] == 77 * 3
    out = bigg_only(**cond, num_inference_steps=1, height=32, width=32, output_type="np")
    assert np.isfinite(out.images).all()


def test_cache_skips_text_tower_on_second_call(sdxl):
    cache = TextEncodingCache()
    calls = {"n": 0}

    def count(*_):
        calls["n"] += 1

    hooks = [m.register_forward_hook(count) for m in (sdxl.text_encoder, sdxl.text_encoder_2)]
    try:
        first = encode_prompt(sdxl, SHORT, NEG, cache=cache)
        after_first = calls["n"]
        second = encode_prompt(sdxl, SHORT, NEG, cache=cache)
        assert after_first == 4 and calls["n"] == after_first  # 2 towers x (prompt, negative)
        assert cache.hits >= 4
        for key in first:
            assert torch.equal(first[key], second[key])
        encode_prompt(sdxl, SHORT, NEG, clip_skip=1, cache=cache)  # other options: encodes
        assert calls["n"] > after_first
    finally:
        for h in hooks:
            h.remove()


def test_bad_inputs(sdxl):
    with pytest.raises(TypeError, match="prompt must be a str or a non-empty list"):
        encode_prompt(sdxl, 3)
    with pytest.raises(ValueError, match="negative_prompt has 1 prompts but prompt has 2"):
        encode_prompt(sdxl, SHORT, ["x"])
    with pytest.raises(ValueError, match="num_images_per_prompt must be >= 1"):
        encode_prompt(sdxl, "x", num_images_per_prompt=0)
    with pytest.raises(TypeError, match="pipe_or_clip must be"):
        encode_prompt(object(), "x")
    with pytest.raises(ValueError, match="unclosed '\\(' opened at position 2"):
        encode_prompt(sdxl, "a (cat", strict=True)
    literal = encode_prompt(sdxl, "a (cat", parse_weights=False, cache=False)
    ref = _reference(sdxl, "a (cat")
    _assert_close(literal, ref, ["prompt_embeds"])


def test_textual_inversion_tokens_expand_like_the_pipeline():
    pipe = _tiny_sdxl(seed=1)
    new = ["<fox>", "<fox>_1"]
    for tok, te in ((pipe.tokenizer, pipe.text_encoder), (pipe.tokenizer_2, pipe.text_encoder_2)):
        tok.add_tokens(new)
        te.resize_token_embeddings(len(tok))
        with torch.no_grad():
            te.get_input_embeddings().weight[-2:] = torch.randn(2, te.config.hidden_size)
    cond = encode_prompt(pipe, "a photo of <fox> in snow", "blurry", cache=False)
    _assert_close(cond, _reference(pipe, "a photo of <fox> in snow", "blurry"))
    weighted = encode_prompt(pipe, "a photo of (<fox>:1.2) in snow", cache=False)
    assert weighted.prompt_embeds.shape == cond.prompt_embeds.shape
