"""The sources registry: load_clip has no case of its own; third parties register names, kinds
and vision pairings, at import or through the clipguide.sources entry point."""

from __future__ import annotations

import pytest
import torch

import clipguide.model.registry as registry
from clipguide.model import (
    CLIP,
    LoadRequest,
    Resolver,
    load_clip,
    register_resolver,
    register_source,
    register_vision_pairing,
    registered_sources,
)
from clipguide.testing import tiny_clip, tiny_openclip_model, tiny_sdxl_pipeline_bigg_only


@pytest.fixture
def clean_registry(monkeypatch):
    """The registry's tables as they are, restored after the test."""
    monkeypatch.setattr(registry, "_named", dict(registry._named))
    monkeypatch.setattr(registry, "_resolvers", list(registry._resolvers))
    monkeypatch.setattr(registry, "_pairings", list(registry._pairings))
    monkeypatch.setattr(registry, "_plugins_loaded", registry._plugins_loaded)


def test_a_registered_name_gets_the_checked_request(clean_registry):
    seen = []

    def loader(request: LoadRequest) -> CLIP:
        seen.append(request)
        return tiny_clip(seed=1, towers=request.towers)

    register_source("my-clip", loader)
    clip = load_clip("my-clip", towers="text", dtype="fp16", device="cpu")
    assert "my-clip" in registered_sources()
    assert clip.towers == ("text",)
    (request,) = seen
    assert request.towers == ("text",) and request.dtype == torch.float16
    assert request.device == torch.device("cpu") and request.file_dtype == torch.float16


def test_a_registered_kind_is_asked_in_order(clean_registry):
    made = tiny_clip(seed=2)
    register_resolver(
        Resolver("a tuple ('mine', n)", lambda s: isinstance(s, tuple), lambda s, r: made)
    )
    assert load_clip(("mine", 3)) is made
    with pytest.raises(ValueError) as info:
        load_clip("no-such-model")
    assert "a tuple ('mine', n)" in str(info.value)  # the error lists every kind, new ones too


def test_plugins_load_once_when_a_name_is_not_found(clean_registry, monkeypatch):
    class Point:
        def __init__(self, name, function):
            self.name, self.value, self.function = name, f"tests:{name}", function

        def load(self):
            return self.function

    calls = []

    def good():
        calls.append("good")
        register_source("plugged", lambda request: tiny_clip(seed=3, towers=request.towers))

    def broken():
        raise RuntimeError("cannot register")

    points = [Point("good", good), Point("broken", broken)]
    monkeypatch.setattr(registry, "entry_points", lambda group: points)
    monkeypatch.setattr(registry, "_plugins_loaded", False)
    registry._named.pop("plugged", None)
    with pytest.warns(RuntimeWarning, match="plugin 'broken'.*cannot register"):
        clip = load_clip("plugged", towers="vision")
    assert clip.towers == ("vision",) and calls == ["good"]
    load_clip("plugged", towers="vision")
    with pytest.raises(ValueError, match="source='still-unknown'"):
        load_clip("still-unknown")
    assert calls == ["good"]  # loaded once


def test_a_vision_pairing_decides_a_pipelines_vision_tower(clean_registry):
    pipe = tiny_sdxl_pipeline_bigg_only(seed=4)
    vision = tiny_openclip_model(seed=5)
    text_config = pipe.text_encoder_2.config
    register_vision_pairing(lambda text: text.config.to_dict() == text_config.to_dict(), vision)
    clip = load_clip(pipe)
    assert clip.text_model is pipe.text_encoder_2
    reference = load_clip(vision, towers="vision")
    images = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(clip.encode_image(images), reference.encode_image(images))


def test_torch_dtype_is_another_name_for_dtype():
    model = tiny_openclip_model(seed=6)
    assert load_clip(model, torch_dtype=torch.float16).dtype == torch.float16
    assert load_clip(model, torch_dtype="bf16").dtype == torch.bfloat16
    with pytest.raises(ValueError, match=r"dtype=torch.float16 and torch_dtype='fp32'"):
        load_clip(model, dtype=torch.float16, torch_dtype="fp32")


def test_the_micro_world_pipeline_pairs_with_its_guide_by_architecture():
    from clipguide.shapes import pipeline
    from clipguide.shapes.registry import is_shapes_text_tower

    pipe = pipeline(progress=False)
    assert not hasattr(pipe, "clipguide_vision_source")  # no ad-hoc attribute
    assert is_shapes_text_tower(pipe.text_encoder_2)
    assert not is_shapes_text_tower(tiny_sdxl_pipeline_bigg_only().text_encoder_2)
    assert not is_shapes_text_tower(load_clip("shapes-judge", towers="text").text_model)
    assert load_clip(pipe).name.endswith("+shapes")
