"""Regions on the tiny random SDXL and SD 1.x pipelines: identities, detaching, behaviour."""

from __future__ import annotations

import contextlib

import pytest
import torch

import clipguide
from clipguide.conditioning import Region, RegionalPrompt
from clipguide.testing import tiny_sd_pipeline, tiny_sdxl_pipeline

SIZE = dict(height=24, width=40)  # latents 12x20, attention 6x10: not square


@pytest.fixture(scope="module", params=["sdxl", "sd"])
def pipe(request):
    built = tiny_sdxl_pipeline() if request.param == "sdxl" else tiny_sd_pipeline()
    built.set_progress_bar_config(disable=True)
    return built


def _run(pipe, prompt="a red circle", seed=0, steps=3, **kwargs):
    options = dict(SIZE, output_type="pt", guidance_scale=5.0)
    options.update(kwargs)
    if prompt is not None:
        options["prompt"] = prompt
    return pipe(
        num_inference_steps=steps, generator=torch.Generator().manual_seed(seed), **options
    ).images


def _state(pipe):
    unet = pipe.unet
    hooks = [
        (name, dict(m._forward_hooks), dict(m._forward_pre_hooks))
        for name, m in unet.named_modules()
    ]
    return set(vars(pipe)), list(unet.attn_processors.items()), hooks


def test_no_regions_reproduce_the_plain_output_bit_for_bit(pipe):
    base = _run(pipe, num_images_per_prompt=2)
    with RegionalPrompt([], blend=0.5).attach(pipe):
        assert torch.equal(_run(pipe, num_images_per_prompt=2), base)


@pytest.mark.parametrize("blend", [0.0, 0.3, 1.0])
def test_one_whole_image_region_with_the_whole_prompt_reproduces_it(pipe, blend):
    base = _run(pipe, prompt=["a red circle", "a blue square"])
    regions = [Region("a red circle", box=(0, 0, 1, 1))]
    with RegionalPrompt(regions, blend=blend).attach(pipe):
        # the second prompt of the batch gets the same region: not itself any more
        out = _run(pipe, prompt=["a red circle", "a blue square"])
    torch.testing.assert_close(out[0], base[0], rtol=0, atol=1e-5)
    if blend < 1.0:
        assert not torch.allclose(out[1], base[1], atol=1e-4)


def test_detaching_restores_the_pipeline_exactly(pipe):
    base = _run(pipe)
    before = _state(pipe)
    processors = dict(pipe.unet.attn_processors)
    rp = RegionalPrompt(["0,0,0.5,1:a blue square", "right:a green triangle"])
    with rp.attach(pipe):
        assert not torch.equal(_run(pipe), base)
    assert _state(pipe) == before
    assert all(processors[k] is v for k, v in pipe.unet.attn_processors.items())
    assert torch.equal(_run(pipe), base)
    rp.attach(pipe)  # attach/detach by hand
    rp.detach()
    assert _state(pipe) == before


@pytest.mark.parametrize("cfg", [5.0, 1.0])
def test_a_full_region_without_blend_is_prompting_with_its_prompt(cfg):
    """SD 1.x (no pooled embeddings): the region's prompt replaces the whole prompt's
    everywhere, so the result is the pipeline prompted with the region's prompt (with CFG the
    negative rows stay the whole call's; without, every row is conditional)."""
    pipe = tiny_sd_pipeline()
    pipe.set_progress_bar_config(disable=True)
    target = _run(pipe, prompt="a blue square", guidance_scale=cfg)
    with RegionalPrompt([Region("a blue square", box=(0, 0, 1, 1))], blend=0.0).attach(pipe):
        out = _run(pipe, prompt="a red circle", guidance_scale=cfg)
    torch.testing.assert_close(out, target, rtol=0, atol=1e-5)


def test_a_region_changes_its_box_more_than_the_rest(pipe):
    size = dict(height=32, width=64)
    base = _run(pipe, output_type="latent", **size)
    with RegionalPrompt([Region("a green triangle", box=(0, 0, 0.5, 1))], blend=0).attach(pipe):
        out = _run(pipe, output_type="latent", **size)
    change = (out - base).abs().mean(dim=(0, 1))  # (h, w) latent cells
    inside, outside = change[:, :16].mean(), change[:, 16:].mean()
    assert inside > 2 * outside


def test_step_window_is_respected(pipe):
    def latents_per_step(rp):
        seen = []

        def record(_pipe, _step, _t, kw):
            seen.append(kw["latents"].clone())
            return kw

        with rp.attach(pipe) if rp is not None else contextlib.nullcontext():
            _run(pipe, steps=4, callback_on_step_end=record)
        return seen

    base = latents_per_step(None)
    total = len(pipe.scheduler.timesteps)  # one evaluation per loop iteration (PNDM: 5)
    for window in (dict(start=0.5), dict(stop=0.5), dict(start=0.25, stop=0.6)):
        rp = RegionalPrompt([Region("a green triangle", box=(0, 0, 1, 1), **window)], blend=0)
        acting = [bool(rp.active(k, total)) for k in range(total)]
        first = acting.index(True)
        out = latents_per_step(rp)
        assert all(torch.equal(out[k], base[k]) for k in range(first)), window
        assert not torch.equal(out[first], base[first]), window
    rp = RegionalPrompt([Region("x", box=(0, 0, 1, 1), start=0.5)], start=0.0, stop=0.5)
    assert [rp.active(p, 4) for p in range(4)] == [[], [], [], []]  # windows intersect
    rp = RegionalPrompt([Region("x", box=(0, 0, 1, 1), start=0.5)], start=0.25, stop=1.0)
    assert [bool(rp.active(p, 4)) for p in range(4)] == [False, False, True, True]


def test_prompt_embeds_from_encode_prompt_and_images_per_prompt(pipe):
    cond = clipguide.encode_prompt(pipe, "a red circle", "", num_images_per_prompt=2)
    rp = RegionalPrompt([Region("a blue square", box=(0.5, 0, 1, 1))])
    with rp.attach(pipe):
        by_embeds = _run(pipe, prompt=None, **cond.to_kwargs())
        by_text = _run(pipe, negative_prompt="", num_images_per_prompt=2)
    torch.testing.assert_close(by_embeds, by_text, rtol=0, atol=1e-5)
    assert by_embeds.shape[0] == 2


def test_composes_with_clip_guidance(pipe):
    from clipguide.guidance import CLIPGuidance
    from clipguide.testing import tiny_clip

    guidance = CLIPGuidance(tiny_clip(seed=5), scale=1.0, start=0.0, stop=1.0, every=1)
    rp = RegionalPrompt([Region("a green triangle", box=(0, 0, 0.5, 1))], blend=0)
    before = _state(pipe)
    with rp.attach(pipe):
        regions_only = _run(pipe)
    with guidance.attach(pipe):
        guided_only = _run(pipe)
    zero = guidance.replace(scale=0.0)
    with rp.attach(pipe), zero.attach(pipe):  # guidance at scale 0: the regions' output
        assert torch.equal(_run(pipe), regions_only)
    with rp.attach(pipe), guidance.attach(pipe):
        both = _run(pipe)
        assert len(guidance.history) == len(pipe.scheduler.timesteps)
    assert not torch.allclose(both, regions_only) and not torch.allclose(both, guided_only)
    full = guidance.replace(mode="full")
    attached = [rp.attach(pipe), full.attach(pipe)]
    _run(pipe)  # the extra UNet pass of "full" runs with regions (all rows conditional)
    attached[0].detach()
    attached[1].detach()
    assert _state(pipe) == before


def _with_random_ip_adapter(pipe, image_dim: int = 8, tokens: int = 4):
    """Install an IP-Adapter with random weights the way ``load_ip_adapter`` lays it out."""
    from diffusers.models.attention_processor import IPAdapterAttnProcessor2_0
    from diffusers.models.embeddings import ImageProjection, MultiIPAdapterImageProjection

    unet = pipe.unet
    width = unet.config.cross_attention_dim
    torch.manual_seed(0)
    processors = {}
    for name, processor in unet.attn_processors.items():
        if name.endswith("attn2.processor"):
            layer = unet.get_submodule(name[: -len(".processor")])
            processor = IPAdapterAttnProcessor2_0(
                hidden_size=layer.to_q.out_features,
                cross_attention_dim=width,
                num_tokens=(tokens,),
                scale=1.0,
            )
        processors[name] = processor
    unet.set_attn_processor(processors)
    projection = ImageProjection(image_dim, width, tokens)
    unet.encoder_hid_proj = MultiIPAdapterImageProjection([projection])
    unet.register_to_config(encoder_hid_dim_type="ip_image_proj")
    return [torch.randn(2, 1, image_dim)]  # (negative, positive) image embeds


def test_ip_adapter_image_tokens_are_kept_inside_regions():
    """The processors installed (IP-Adapter's) run for each region with the image tokens: a
    full region without blend equals prompting with its prompt, image prompt included."""
    pipe = tiny_sd_pipeline()
    pipe.set_progress_bar_config(disable=True)
    embeds = _with_random_ip_adapter(pipe)
    base = _run(pipe, ip_adapter_image_embeds=embeds)
    target = _run(pipe, prompt="a blue square", ip_adapter_image_embeds=embeds)
    pipe.set_ip_adapter_scale(0.0)
    assert not torch.allclose(
        _run(pipe, prompt="a blue square", ip_adapter_image_embeds=embeds), target
    )
    pipe.set_ip_adapter_scale(1.0)
    with RegionalPrompt([]).attach(pipe):
        assert torch.equal(_run(pipe, ip_adapter_image_embeds=embeds), base)
    with RegionalPrompt([Region("a blue square", box=(0, 0, 1, 1))], blend=0.0).attach(pipe):
        out = _run(pipe, ip_adapter_image_embeds=embeds)
    torch.testing.assert_close(out, target, rtol=0, atol=1e-5)
    # two halves prompted alike: one batched call, image tokens repeated for both
    halves = [
        Region("a blue square", box=(0, 0, 0.5, 1)),
        Region("a blue square", box=(0.5, 0, 1, 1)),
    ]
    with RegionalPrompt(halves, blend=0.0).attach(pipe):
        out = _run(pipe, ip_adapter_image_embeds=embeds)
    torch.testing.assert_close(out, target, rtol=0, atol=1e-5)


def test_every_layer_gets_masks_for_the_token_counts_it_sees(pipe):
    """A non-square run: each cross-attention call's token count has a grid on the latents."""
    from clipguide.conditioning.region_masks import attention_grid

    seen = []
    layers = [m for m in pipe.unet.modules() if getattr(m, "is_cross_attention", False)]
    handles = [m.register_forward_pre_hook(lambda m, a: seen.append(a[0].shape[1])) for m in layers]
    rp = RegionalPrompt([Region("a blue square", box=(0.5, 0, 1, 1))])
    try:
        with rp.attach(pipe) as attached:
            _run(pipe, height=24, width=56, steps=1)
            cached = {key[2] for key in rp._attachment._cache if key[0] == "masks"}
    finally:
        for h in handles:
            h.remove()
    assert attached is rp
    assert set(seen) == cached == {6 * 14}
    assert attention_grid((12, 28), 6 * 14) == (6, 14)


@pytest.mark.parametrize(
    "regions",
    [
        [Region("a blue square", box=(0.1, 0.2, 0.45, 0.9), weight=0.8)],
        # equal token counts: one batched processor call
        [Region("a blue square", box=(0, 0, 0.5, 1)), Region("green", box=(0.5, 0, 1, 1))],
        # overlapping, different sizes, one long prompt (two chunks): separate calls
        [
            Region("a blue square", box=(0, 0, 0.7, 1), weight=1.5),
            Region(" ".join(["a long green triangle"] * 30), box=(0.3, 0.5, 1, 1)),
            Region("red", box=(0.3, 0, 1, 0.5)),
        ],
    ],
    ids=["one", "batched", "separate"],
)
def test_one_layer_blends_regions_into_the_conditional_rows_only(regions):
    """The hook on one cross-attention layer, against the blend computed from full passes:
    covered-tokens-only calls, batching and the CFG row split change nothing."""
    from clipguide.conditioning.region_masks import blend_regions, region_masks, region_shares
    from clipguide.guidance.hooks import Evaluation

    pipe = tiny_sd_pipeline()
    rp = RegionalPrompt(regions, blend=0.25)
    layer = next(m for m in pipe.unet.modules() if getattr(m, "is_cross_attention", False))
    width = pipe.unet.config.cross_attention_dim
    torch.manual_seed(1)
    hidden = torch.randn(2, 6 * 10, layer.to_q.in_features)
    context = torch.randn(2, 77, width)
    with rp.attach(pipe) as attached, torch.no_grad():
        attachment = attached._attachment
        attachment.hooks.current = Evaluation(0, 1, cfg=True, latent_hw=(12, 20))
        out = layer(hidden, encoder_hidden_states=context)
        attachment.hooks.current = None
        whole = layer(hidden, encoder_hidden_states=context)
        regional = [layer.forward(hidden[1:], encoder_hidden_states=e) for e in attachment._embeds]
    masks = region_masks(regions, (12, 20), 60)
    assert all(0 < int(c) < 60 for c in (masks > 0).sum(1))  # the covered-tokens path is taken
    weights = torch.tensor([r.weight for r in regions])
    expected = blend_regions(whole[1:], regional, region_shares(masks, weights, 0.25))
    assert torch.equal(out[0], whole[0])  # unconditional row untouched
    torch.testing.assert_close(out[1:], expected, rtol=0, atol=1e-5)
    assert not torch.allclose(out[1:], whole[1:])


def test_dtype_follows_the_pipeline():
    pipe = tiny_sdxl_pipeline().to(dtype=torch.bfloat16)
    pipe.set_progress_bar_config(disable=True)
    base = _run(pipe, output_type="latent", steps=2)
    seen = []
    layers = [m for m in pipe.unet.modules() if getattr(m, "is_cross_attention", False)]
    with RegionalPrompt([Region("a blue square", box=(0, 0, 0.5, 1))]).attach(pipe):
        # registered after the regions' hooks: sees the blended output
        handles = [
            m.register_forward_hook(lambda m, a, out: seen.append(out.dtype)) for m in layers
        ]
        out = _run(pipe, output_type="latent", steps=2)
        for h in handles:
            h.remove()
    assert set(seen) == {torch.bfloat16} and out.dtype == torch.bfloat16
    assert not torch.equal(out, base)
