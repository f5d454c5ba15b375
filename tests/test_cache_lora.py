"""The text cache after every way diffusers/PEFT change text-encoder weights (a real PEFT LoRA).

Each test encodes once (filling the cache), changes the pipeline's text encoders, and checks
that the cached encode equals a fresh uncached one, and that the change did change it.
"""

import copy

import peft  # noqa: F401  (the dev extra's; diffusers loads text-encoder LoRAs through it)
import pytest
import torch

from clipguide.conditioning import encode_prompt
from clipguide.model.text_cache import TextEncodingCache
from clipguide.testing import tiny_sdxl_pipeline

# PEFT's own notices when a second adapter is added or the active one deleted: expected here
pytestmark = [
    pytest.mark.filterwarnings("ignore:Already found a `peft_config`:UserWarning"),
    pytest.mark.filterwarnings("ignore:Adapter one was active:UserWarning"),
]

PROMPTS = ["a (red:1.2) circle above a square", "two blue triangles"]
NEG = "blurry"
TEXT_ENCODERS = ["text_encoder", "text_encoder_2"]


def _lora(pipe, seed, rank=2):
    """A diffusers-format text-encoder LoRA state dict with random (non-zero) A and B."""
    gen = torch.Generator().manual_seed(seed)
    sd = {}
    for comp in TEXT_ENCODERS:
        for name, mod in getattr(pipe, comp).named_modules():
            if name.endswith(("q_proj", "v_proj", "fc1")):
                a = torch.randn(rank, mod.in_features, generator=gen) * 0.5
                b = torch.randn(mod.out_features, rank, generator=gen) * 0.5
                sd[f"{comp}.{name}.lora_A.weight"] = a
                sd[f"{comp}.{name}.lora_B.weight"] = b
    return sd


@pytest.fixture(scope="module")
def base():
    pipe = tiny_sdxl_pipeline(seed=5)
    pipe.load_lora_weights(_lora(pipe, 0), adapter_name="one")
    pipe.load_lora_weights(_lora(pipe, 1), adapter_name="two")
    pipe.set_adapters(["one"])
    return pipe


@pytest.fixture
def pipe(base):
    """The base pipeline with private copies of its text encoders (the rest is shared)."""
    copies = {comp: copy.deepcopy(getattr(base, comp)) for comp in TEXT_ENCODERS}
    new = type(base)(**{**base.components, **copies})
    new.set_progress_bar_config(disable=True)
    return new


def _encode(pipe, cache):
    return encode_prompt(pipe, PROMPTS, NEG, cache=cache)


def _check(pipe, change):
    """Fill the cache, apply ``change``, then cached must equal fresh and differ from before."""
    cache = TextEncodingCache()
    before = _encode(pipe, cache)
    assert torch.equal(_encode(pipe, cache)["prompt_embeds"], before["prompt_embeds"])
    assert cache.hits > 0  # the second call was served from the cache
    change(pipe)
    cached, fresh = _encode(pipe, cache), _encode(pipe, False)
    for key in fresh:
        assert torch.equal(cached[key], fresh[key]), key
    assert not torch.equal(fresh["prompt_embeds"], before["prompt_embeds"])


def _fuse(scale):
    return lambda p: p.fuse_lora(components=TEXT_ENCODERS, lora_scale=scale)


def _set(names, weights):
    return lambda p: p.set_adapters(names, adapter_weights=weights)


def _unfuse_after_fuse(p):
    p.fuse_lora(components=TEXT_ENCODERS)
    _encode(p, True)  # seen fused by the shared cache too
    p.unfuse_lora(components=TEXT_ENCODERS)


def _fuse_other_scale(p):
    p.fuse_lora(components=TEXT_ENCODERS, lora_scale=0.5)
    p.unfuse_lora(components=TEXT_ENCODERS)
    p.fuse_lora(components=TEXT_ENCODERS, lora_scale=0.7)


def _load_third(p):
    p.load_lora_weights(_lora(p, 2), adapter_name="three")


def _delete(p):
    p.delete_adapters(["one"])


def _unload(p):
    p.unload_lora_weights()


def _state(assign):
    def change(p):
        te = p.text_encoder_2
        sd = {k: v + 0.01 for k, v in te.state_dict().items() if v.is_floating_point()}
        te.load_state_dict(sd, strict=False, assign=assign)

    return change


def _data_assign(p):
    for mod in p.text_encoder.modules():
        if hasattr(mod, "base_layer"):
            mod.base_layer.weight.data = mod.base_layer.weight.data * 1.5


def _dtype(p):
    for comp in TEXT_ENCODERS:
        getattr(p, comp).to(torch.float64)


def _dtype_round_trip(p):
    for comp in TEXT_ENCODERS:
        getattr(p, comp).to(torch.float16).to(torch.float32)


CHANGES = {
    "load_lora_weights": _load_third,
    "fuse_lora": _fuse(1.0),
    "fuse_lora_scaled": _fuse(0.5),
    "unfuse_lora": _unfuse_after_fuse,
    "fuse_other_scale": _fuse_other_scale,
    "set_adapters_scale": _set(["one"], [0.3]),
    "set_adapters_both": _set(["one", "two"], [1.0, 0.5]),
    "set_adapters_other": _set(["two"], [1.0]),
    "disable_lora": lambda p: p.disable_lora(),
    "delete_adapters": _delete,
    "unload_lora_weights": _unload,
    "load_state_dict": _state(assign=False),
    "load_state_dict_assign": _state(assign=True),
    "data_assign": _data_assign,
    "to_dtype": _dtype,
    "dtype_round_trip": _dtype_round_trip,
}


@pytest.mark.parametrize("name", list(CHANGES))
def test_cached_equals_fresh_after(pipe, name):
    _check(pipe, CHANGES[name])


def test_enable_lora_after_disable(pipe):
    pipe.disable_lora()
    _check(pipe, lambda p: p.enable_lora())


def test_lora_really_changes_the_encode(base):
    plain = tiny_sdxl_pipeline(seed=5)
    ours = encode_prompt(base, PROMPTS, NEG, cache=False)
    ref = encode_prompt(plain, PROMPTS, NEG, cache=False)
    assert not torch.equal(ours["prompt_embeds"], ref["prompt_embeds"])
    assert not torch.equal(ours["pooled_prompt_embeds"], ref["pooled_prompt_embeds"])
