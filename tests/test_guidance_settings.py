"""CLIPGuidance(clip, settings=None, **overrides): the settings are written once, in
GuidanceSettings; the views' randomness can come from a caller's generator."""

from __future__ import annotations

import dataclasses
import inspect

import pytest
import torch

from clipguide.guidance import CLIPGuidance, GuidanceSettings
from clipguide.guidance.schedulers import NoiseLevel
from clipguide.testing import tiny_clip

LEVEL = NoiseLevel(alpha=1.0, sigma=1.0, input_scale=1.0, prediction_type="epsilon", kind="vp")
FIELDS = {f.name for f in dataclasses.fields(GuidanceSettings)}


@pytest.fixture(scope="module")
def clip():
    return tiny_clip(seed=3)


def _decoder(latents: torch.Tensor) -> torch.Tensor:
    return torch.tanh(latents[:, :3])


def _similarity(guidance: CLIPGuidance, clip) -> torch.Tensor:
    x0 = torch.linspace(-1, 1, 2 * 4 * 8 * 8).view(2, 4, 8, 8)
    targets = torch.nn.functional.normalize(torch.ones(2, clip.embed_dim), dim=-1)
    return guidance.measure(x0, targets, decoder=_decoder)[1]


def test_no_setting_is_repeated_in_the_constructor():
    own = set(inspect.signature(CLIPGuidance).parameters)
    assert own & FIELDS == set()  # the fields come in through **overrides only
    assert "overrides" in own and "settings" in own


def test_overrides_replace_fields_of_the_given_settings(clip):
    base = GuidanceSettings(scale=2.0, every=3, views=2)
    guidance = CLIPGuidance(clip, base, mode="full", every=5)
    assert guidance.settings == dataclasses.replace(base, mode="full", every=5)
    assert CLIPGuidance(clip).settings == GuidanceSettings()
    assert CLIPGuidance(clip, scale=1).settings == GuidanceSettings(scale=1.0)


def test_an_override_is_validated_with_the_settings_message(clip):
    with pytest.raises(ValueError, match=r"scale=-1 is not valid; accepted: a finite number"):
        CLIPGuidance(clip, scale=-1)
    with pytest.raises(ValueError, match=r"stop=0.2 is not valid"):
        CLIPGuidance(clip, GuidanceSettings(start=0.5, stop=0.9), stop=0.2)


def test_an_unknown_setting_lists_the_accepted_names(clip):
    with pytest.raises(TypeError) as info:
        CLIPGuidance(clip, scael=2.0)
    message = str(info.value)
    assert "'scael'" in message and "'scale'" in message and "'decode_size'" in message
    assert "'decoder'" in message and "'target'" in message  # the constructor's own names


def test_settings_must_be_guidance_settings(clip):
    with pytest.raises(TypeError, match=r"settings=\{'scale': 2\} is not valid"):
        CLIPGuidance(clip, {"scale": 2})


def test_replace_changes_settings_and_keeps_the_rest(clip):
    target = torch.ones(clip.embed_dim)
    guidance = CLIPGuidance(clip, GuidanceSettings(every=3), target=target, decoder=_decoder)
    copy = guidance.replace(scale=1.5, record=True)
    assert copy is not guidance
    assert copy.settings == GuidanceSettings(every=3, scale=1.5)
    assert copy.target is target and copy.decoder is _decoder and copy.record is True
    swapped = guidance.replace(settings=GuidanceSettings(mode="full"), views=2)
    assert swapped.settings == GuidanceSettings(mode="full", views=2)


def test_views_draw_from_the_callers_generator_without_reseeding(clip):
    settings = GuidanceSettings(views=3, noise=0.1)
    seeded = CLIPGuidance(clip, settings)
    first = _similarity(seeded, clip)
    seeded.new_run()  # reseeded with settings.seed: the same views again
    assert torch.equal(_similarity(seeded, clip), first)

    generator = torch.Generator().manual_seed(0)
    own = CLIPGuidance(clip, settings, generator=generator)
    assert torch.equal(_similarity(own, clip), first)  # seed 0, as the default
    state = generator.get_state()
    own.new_run()  # the caller's generator is left as it is
    assert torch.equal(generator.get_state(), state)
    assert not torch.equal(_similarity(own, clip), first)  # the next views, not the first again
    assert own.replace(scale=1.0).generator is generator


@pytest.mark.parametrize(
    ("kwargs", "error", "needles"),
    [
        ({"generator": 5}, ValueError, ["generator=5", "CPU torch.Generator"]),
        ({"generator": torch.Generator(), "seed": 3}, ValueError, ["seed=3", "not both"]),
    ],
)
def test_bad_generator_is_a_clear_error(clip, kwargs, error, needles):
    with pytest.raises(error) as info:
        CLIPGuidance(clip, **kwargs)
    assert all(n in str(info.value) for n in needles), str(info.value)
