"""The text-cache key (a walk over every submodule and tensor: 15 ms on bigG) is taken once per
``select``, once per guided sampling run and once per scoring job, not on every encode; outside
those scopes it is taken on every call, so a change of weights is still seen."""

from __future__ import annotations

import pytest
import torch

import clipguide.model.cache_key as cache_key
from clipguide.guidance import CLIPGuidance
from clipguide.model.text_cache import HeldKeys, hold_keys, model_key
from clipguide.scoring import CLIPScorer
from clipguide.testing import tiny_clip, tiny_sdxl_pipeline


@pytest.fixture
def keys_taken(monkeypatch):
    """Modules whose key was computed (one entry per walk over the module)."""
    taken: list[torch.nn.Module] = []
    describe = cache_key._describe

    def counting(module):
        taken.append(module)
        return describe(module)

    monkeypatch.setattr(cache_key, "_describe", counting)
    return taken


@pytest.fixture(scope="module")
def clip():
    return tiny_clip(seed=3)


IMAGES = [torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(i)) for i in range(3)]
PROMPT = "two red circles left of a blue square, no green triangle"  # parts, relation, counts


def test_a_structured_select_takes_one_key(clip, keys_taken):
    scorer = CLIPScorer(clip, progress=False)
    scorer.select(IMAGES, PROMPT, "structured")
    assert keys_taken.count(clip.text_model) == 1  # it encodes three times


def test_a_scorer_holding_keys_takes_one_key_for_its_life(clip, keys_taken):
    holding = CLIPScorer(clip, progress=False, hold_keys=True)
    for prompt in ("a red circle", "a blue square", PROMPT):
        holding.cosine(IMAGES, prompt)
        holding.select(IMAGES, prompt, "structured")
    assert keys_taken.count(clip.text_model) == 1
    keys_taken.clear()
    plain = CLIPScorer(clip, progress=False)  # the default: a key per call, as before
    for prompt in ("a red circle", "a blue square"):
        plain.cosine(IMAGES, prompt)
    assert keys_taken.count(clip.text_model) == 2


def test_a_guided_run_takes_one_key(clip, keys_taken):
    pipe = tiny_sdxl_pipeline()
    pipe.set_progress_bar_config(disable=True)
    guidance = CLIPGuidance(clip, scale=1.0, start=0.0, stop=1.0, every=1)
    with guidance.attach(pipe):
        for run in range(2):
            keys_taken.clear()
            pipe("a red circle", num_inference_steps=4, output_type="pt", guidance_scale=5.0)
            assert len(guidance.history) == 4  # four guided evaluations ...
            assert keys_taken.count(clip.text_model) == 1, run  # ... one key


def test_targets_outside_a_run_see_weights_changed_after_it(clip):
    pipe = tiny_sdxl_pipeline()
    pipe.set_progress_bar_config(disable=True)
    guidance = CLIPGuidance(clip, scale=1.0, start=0.0, stop=1.0, every=1)
    with guidance.attach(pipe):
        pipe("a red circle", num_inference_steps=2, output_type="pt", guidance_scale=5.0)
    before = guidance.targets(1, "a red circle")
    weight = next(p for p in clip.text_model.parameters() if p.ndim == 2)
    saved = weight.detach().clone()
    try:
        with torch.no_grad():
            weight.mul_(1.5)
        after = guidance.targets(1, "a red circle")  # the run's held key must not be reused
        assert not torch.allclose(before, after)
    finally:
        with torch.no_grad():
            weight.copy_(saved)


def test_keys_are_taken_again_outside_the_scope_so_changes_are_seen(clip):
    scorer = CLIPScorer(clip, progress=False, cache=True)
    text = clip.text_model
    before = scorer.select(IMAGES, PROMPT, "structured")
    weight = next(p for p in text.parameters() if p.ndim == 2)
    saved = weight.detach().clone()
    try:
        with torch.no_grad():
            weight.mul_(1.5)
        after = scorer.select(IMAGES, PROMPT, "structured")
        assert not torch.allclose(before, after)  # the next select saw the new weights
    finally:
        with torch.no_grad():
            weight.copy_(saved)
    assert torch.allclose(scorer.select(IMAGES, PROMPT, "structured"), before)


def test_hold_keys_scopes_nest_and_take_a_holder():
    module = torch.nn.Linear(2, 2)
    held = HeldKeys()
    with hold_keys(held):
        first = model_key(module)
        with hold_keys():  # an inner scope uses the outer holder
            assert model_key(module) == first
        with torch.no_grad():
            module.weight.add_(1.0)
        assert model_key(module) == first  # held: the caller promised no change
    assert model_key(module) != first  # outside: taken again, the change is seen
    assert held.taken == 1
    with pytest.raises(TypeError, match=r"held must be a HeldKeys or None, got dict"):
        with hold_keys({}):
            pass
