"""The shared text-encoding cache: LRU bounds, model identity, and the CLIP conveniences."""

import copy

import pytest
import torch

from clipguide import testing
from clipguide.model.text_cache import (
    TextEncodingCache,
    cached_encode_text,
    cached_text_embeds,
    encode_token_rows,
    model_key,
)

PROMPTS = ["a red cube", "a blue sphere", "a red cube"]


@pytest.fixture(scope="module")
def clip():
    return testing.tiny_clip(towers=("text",))


class Counter:
    def __init__(self, module):
        self.n = 0
        self.handle = module.register_forward_hook(self)

    def __call__(self, *_):
        self.n += 1


def test_lru_evicts_by_count_and_bytes():
    cache = TextEncodingCache(max_entries=2, max_bytes=1000)
    t = torch.zeros(10)  # 40 bytes
    cache.put("a", {"x": t})
    cache.put("b", {"x": t})
    assert cache.get("a") is not None  # a is now most recent
    cache.put("c", {"x": t})
    assert cache.get("b") is None and cache.get("a") is not None and len(cache) == 2
    assert cache.nbytes == 80
    cache.put("big", {"x": torch.zeros(200)})  # 800 bytes: evicts until under 1000
    assert cache.nbytes <= 1000 and cache.get("big") is not None
    cache.put("huge", {"x": torch.zeros(1000)})  # larger than the bound: not stored
    assert cache.get("huge") is None
    cache.clear()
    assert len(cache) == 0 and cache.nbytes == 0 and cache.hits == 0
    with pytest.raises(ValueError, match="max_entries must be an int >= 0, got -1"):
        TextEncodingCache(max_entries=-1)


def test_stored_tensors_are_private_copies():
    cache = TextEncodingCache()
    t = torch.zeros(3)
    cache.put("k", {"x": t})
    t += 1
    assert not cache.get("k")["x"].any()


def test_cached_text_embeds_match_and_skip_the_tower(clip):
    cache = TextEncodingCache()
    count = Counter(clip.text_model)
    try:
        with torch.no_grad():
            ref = clip.encode_text(PROMPTS).embeds
        first = cached_text_embeds(clip, PROMPTS, cache=cache)
        n = count.n
        second = cached_text_embeds(clip, PROMPTS, cache=cache)
        assert count.n == n  # no forward on the second call
        assert torch.equal(first, second)
        assert (first - ref).abs().max() <= 1e-6
        assert torch.allclose(first.norm(dim=-1), torch.ones(3))
        cached_text_embeds(clip, PROMPTS, cache=False)
        assert count.n == n + 1
    finally:
        count.handle.remove()


def test_cached_encode_text_matches_encode_text(clip):
    cache = TextEncodingCache()
    with torch.no_grad():
        ref = clip.encode_text(PROMPTS[:2], hidden_layer=-1)
    got = cached_encode_text(clip, PROMPTS[:2], hidden_layer=-1, cache=cache)
    assert torch.equal(got.hidden_states, ref.hidden_states)
    assert torch.equal(got.pooled, ref.pooled)
    again = cached_encode_text(clip, clip.tokenize(PROMPTS[:2]), hidden_layer=-1, cache=cache)
    assert torch.equal(again.pooled, got.pooled) and cache.hits == 2
    other_layer = cached_encode_text(clip, PROMPTS[:2], hidden_layer=-2, cache=cache)
    assert not torch.equal(other_layer.hidden_states, got.hidden_states)


def test_changing_weights_invalidates(clip):
    cache = TextEncodingCache()
    model = clip.text_model
    ids = clip.tokenize(["a red cube"])
    key = model_key(model)
    _, before = encode_token_rows(model, ids, hidden_layer=None, cache=cache)
    with torch.no_grad():
        model.text_projection.weight.mul_(2.0)  # in-place: bumps the version counter
    try:
        assert model_key(model) != key
        _, after = encode_token_rows(model, ids, hidden_layer=None, cache=cache)
        assert torch.allclose(after, 2 * before, atol=1e-5)
    finally:
        with torch.no_grad():
            model.text_projection.weight.div_(2.0)


def test_bad_arguments(clip):
    with pytest.raises(TypeError, match="cache must be True, False or a TextEncodingCache"):
        cached_text_embeds(clip, "x", cache="yes")
    with pytest.raises(TypeError, match="clip must be a clipguide CLIP"):
        cached_text_embeds(object(), "x")
    with pytest.raises(ValueError, match=r"ids must be an \(N, L\) integer tensor.*shape \(77,\)"):
        encode_token_rows(clip.text_model, torch.zeros(77, dtype=torch.long))


# -- every way weights change is seen (defect: .data writes and new storages served stale) ------
_BASE = {}


def _fresh_copy(seed=1):
    if seed not in _BASE:
        _BASE[seed] = testing.tiny_clip(seed=seed, towers=("text",))
    return copy.deepcopy(_BASE[seed])


def _assert_serves_fresh(clip, cache, ids):
    _, cached = encode_token_rows(clip.text_model, ids, hidden_layer=None, cache=cache)
    _, fresh = encode_token_rows(clip.text_model, ids, hidden_layer=None, cache=False)
    assert torch.equal(cached, fresh)
    return fresh


def _edits():
    def data_assign(m):
        w = m.text_projection.weight
        w.data = w.data * 2

    def data_inplace(m):
        m.text_projection.weight.data.mul_(2)  # .data shares no version counter

    def data_row(m):
        m.get_input_embeddings().weight.data[320] = 0  # one embedding row ("a")

    def data_copy(m):
        m.text_projection.weight.data.copy_(torch.randn_like(m.text_projection.weight))

    def assign_state(m):
        sd = {k: v * 1.5 for k, v in m.state_dict().items() if v.is_floating_point()}
        m.load_state_dict(sd, strict=False, assign=True)

    def copy_state(m):
        sd = {k: v * 1.5 for k, v in m.state_dict().items() if v.is_floating_point()}
        m.load_state_dict(sd, strict=False)

    def dtype_round_trip(m):
        m.to(torch.float16).to(torch.float32)  # same dtype as before, rounded weights

    def scaled_attr(m):
        m.text_model.encoder.layers[0].self_attn.scale *= 3  # plain Python state

    def forward_hook(m):
        m.text_projection.register_forward_hook(lambda mod, args, out: out * 2)

    return [
        data_assign,
        data_inplace,
        data_row,
        data_copy,
        assign_state,
        copy_state,
        dtype_round_trip,
        scaled_attr,
        forward_hook,
    ]


@pytest.mark.parametrize("edit", _edits(), ids=lambda f: f.__name__)
def test_weight_edits_invalidate(edit):
    clip = _fresh_copy()
    model = clip.text_model
    cache = TextEncodingCache()
    ids = clip.tokenize(["a red cube", "a blue sphere"])
    before = _assert_serves_fresh(clip, cache, ids)
    key = model_key(model)
    edit(model)
    assert model_key(model) != key
    after = _assert_serves_fresh(clip, cache, ids)
    assert not torch.equal(before, after)  # the edit changed the result


def test_key_is_stable_and_names_one_state():
    clip = _fresh_copy(seed=4)
    model = clip.text_model
    key = model_key(model)
    assert model_key(model) == key
    hooks = lambda: sum(len(m._forward_hooks) for m in model.modules())  # noqa: E731
    assert hooks() == 0
    with torch.no_grad():  # transformers adds output-recording hooks on the first forward
        model(input_ids=clip.tokenize(["x"]), output_hidden_states=True)
    assert hooks() > 0
    assert model_key(model) == key  # ...which do not change results, so they keep the key
    other = _fresh_copy(seed=4).text_model  # same weights, another module
    assert model_key(other)[0] != key[0]


def test_sparse_data_write_outside_the_sample_is_not_seen():
    """The documented limit: a .data write to an unsampled element keeps the key."""
    model = _fresh_copy().text_model
    key = model_key(model)
    model.text_projection.weight.data[3, 7] += 1.0
    assert model_key(model) == key
    model.text_projection.weight.data[0, 7] += 1.0  # first row: sampled
    assert model_key(model) != key


def test_unsampleable_tensors_are_never_cached():
    model = _fresh_copy().text_model
    model.register_buffer("odd", torch.zeros(2, dtype=torch.complex128))  # 16-byte elements
    assert model_key(model) != model_key(model)


def test_scorer_cache_size_zero_caches_nothing(clip):
    from clipguide import CLIPScorer
    from clipguide.model import TEXT_CACHE

    TEXT_CACHE.clear()
    count = Counter(clip.text_model)
    try:
        scorer = CLIPScorer(clip, cache_size=0)
        first = scorer.embed_texts(["a red cube"])
        second = scorer.embed_texts(["a red cube"])
        assert count.n == 2 and len(TEXT_CACHE) == 0
        assert torch.equal(first, second)
    finally:
        count.handle.remove()
