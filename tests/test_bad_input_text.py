"""Bad input to the text side: every case raises the right type with a message that names the
argument and the value received, or takes the documented fallback (a warning)."""

import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import clipguide
from clipguide import CLIPScorer, encode_prompt, testing
from clipguide.conditioning import Conditioning
from clipguide.conditioning.prompts import PromptSyntaxWarning, parse_prompt, tokenize_prompt
from clipguide.model.clip import CLIP
from clipguide.model.text_cache import (
    TextEncodingCache,
    cached_encode_text,
    cached_text_embeds,
    encode_token_rows,
    model_key,
)
from clipguide.model.tokenizer import offline_tokenizer


@pytest.fixture(scope="module")
def env():
    clip = testing.tiny_clip(seed=3)
    tok = offline_tokenizer()
    unset = offline_tokenizer()
    unset.model_max_length = int(1e30)  # what transformers gives a tokenizer without a limit
    tiny = offline_tokenizer(model_max_length=2)
    cond = encode_prompt(clip, "a red circle", cache=False)
    vision_only = CLIP(vision_model=clip.vision_model, preprocess=clip.preprocess, name="v")
    return SimpleNamespace(
        clip=clip, tok=tok, unset=unset, tiny=tiny, cond=cond, vision_only=vision_only
    )


def _cond(env, **change):
    fields = dict(env.cond.items())
    fields.update(change)
    return lambda: Conditioning(**fields)


ENC = encode_prompt
PACKAGE = Path(clipguide.__file__).resolve().parent
T = torch.zeros

# (id, call(env), exception, fragments the message must contain)
RAISES = [
    # encode_prompt
    ("enc-prompt-int", lambda e: ENC(e.clip, 3), TypeError, ["prompt must be", "got 3"]),
    ("enc-prompt-none", lambda e: ENC(e.clip, None), TypeError, ["prompt must be", "None"]),
    ("enc-prompt-empty", lambda e: ENC(e.clip, []), TypeError, ["prompt must be", "got []"]),
    ("enc-prompt-item", lambda e: ENC(e.clip, ["a", 3]), TypeError, ["prompt", "['a', 3]"]),
    ("enc-prompt-bytes", lambda e: ENC(e.clip, b"a"), TypeError, ["prompt", "b'a'"]),
    ("enc-neg-int", lambda e: ENC(e.clip, "a", 3), TypeError, ["negative_prompt", "got 3"]),
    ("enc-neg-empty", lambda e: ENC(e.clip, "a", []), TypeError, ["negative_prompt", "[]"]),
    (
        "enc-neg-count",
        lambda e: ENC(e.clip, ["a", "b"], ["x", "y", "z"]),
        ValueError,
        ["negative_prompt has 3 prompts", "prompt has 2"],
    ),
    (
        "enc-n-zero",
        lambda e: ENC(e.clip, "a", num_images_per_prompt=0),
        ValueError,
        ["num_images_per_prompt", "got 0"],
    ),
    (
        "enc-n-float",
        lambda e: ENC(e.clip, "a", num_images_per_prompt=1.5),
        TypeError,
        ["num_images_per_prompt", "1.5"],
    ),
    (
        "enc-n-bool",
        lambda e: ENC(e.clip, "a", num_images_per_prompt=True),
        TypeError,
        ["num_images_per_prompt", "True"],
    ),
    ("enc-skip-neg", lambda e: ENC(e.clip, "a", clip_skip=-1), ValueError, ["clip_skip", "-1"]),
    ("enc-skip-big", lambda e: ENC(e.clip, "a", clip_skip=99), ValueError, ["clip_skip", "99"]),
    ("enc-skip-str", lambda e: ENC(e.clip, "a", clip_skip="1"), ValueError, ["clip_skip", "'1'"]),
    (
        "enc-skip-bool",
        lambda e: ENC(e.clip, "a", clip_skip=True),
        ValueError,
        ["clip_skip", "True"],
    ),
    ("enc-skip-float", lambda e: ENC(e.clip, "a", clip_skip=1.0), ValueError, ["clip_skip", "1.0"]),
    (
        "enc-parse-weights",
        lambda e: ENC(e.clip, "a", parse_weights="yes"),
        TypeError,
        ["parse_weights", "'yes'"],
    ),
    ("enc-strict", lambda e: ENC(e.clip, "a", strict=1), TypeError, ["strict", "got 1"]),
    (
        "enc-force-zeros",
        lambda e: ENC(e.clip, "a", force_zeros_for_empty_prompt="no"),
        TypeError,
        ["force_zeros_for_empty_prompt", "'no'"],
    ),
    (
        "enc-t5-length",
        lambda e: ENC(e.clip, "a", max_sequence_length=0),
        ValueError,
        ["max_sequence_length", "got 0"],
    ),
    (
        "enc-t5-length-str",
        lambda e: ENC(e.clip, "a", max_sequence_length="256"),
        TypeError,
        ["max_sequence_length", "'256'"],
    ),
    ("enc-device", lambda e: ENC(e.clip, "a", device="gpux"), ValueError, ["device", "'gpux'"]),
    ("enc-device-num", lambda e: ENC(e.clip, "a", device=3.5), ValueError, ["device", "3.5"]),
    ("enc-cache", lambda e: ENC(e.clip, "a", cache="yes"), TypeError, ["cache must be", "'yes'"]),
    ("enc-cache-int", lambda e: ENC(e.clip, "a", cache=5), TypeError, ["cache must be", "got 5"]),
    ("enc-target", lambda e: ENC(object(), "a"), TypeError, ["pipe_or_clip", "got object"]),
    ("enc-target-none", lambda e: ENC(None, "a"), TypeError, ["pipe_or_clip", "NoneType"]),
    ("enc-no-text", lambda e: ENC(e.vision_only, "a"), ValueError, ["no text tower", "'v'"]),
    ("enc-weight", lambda e: ENC(e.clip, "(a:1e39)"), ValueError, ["weight '1e39'", "position 3"]),
    (
        "enc-strict-open",
        lambda e: ENC(e.clip, "a (cat", strict=True),
        ValueError,
        ["unclosed '('", "position 2"],
    ),
    # parse_prompt
    ("parse-none", lambda e: parse_prompt(None), TypeError, ["prompt must be a str", "None"]),
    ("parse-list", lambda e: parse_prompt(["a"]), TypeError, ["prompt must be a str", "['a']"]),
    ("parse-strict", lambda e: parse_prompt("a", strict="y"), TypeError, ["strict", "'y'"]),
    (
        "parse-nan-strict",
        lambda e: parse_prompt("(a:nan)", strict=True),
        ValueError,
        ["weight 'nan'", "position 3"],
    ),
    ("parse-inf", lambda e: parse_prompt("(a:1e999)"), ValueError, ["'1e999'", "position 3"]),
    (
        "parse-product",
        lambda e: parse_prompt("((a:1e30):1e30)"),
        ValueError,
        ["span 'a' at position 2", "1e+60"],
    ),
    # tokenize_prompt
    ("tok-prompt", lambda e: tokenize_prompt(5, [e.tok]), TypeError, ["prompt must be", "5"]),
    ("tok-none", lambda e: tokenize_prompt("a", []), TypeError, ["tokenizers", "got []"]),
    ("tok-single", lambda e: tokenize_prompt("a", e.tok), TypeError, ["tokenizers", "Tokenizer"]),
    (
        "tok-chunk",
        lambda e: tokenize_prompt("a", [e.tok], chunk_size=0),
        ValueError,
        ["chunk_size", "got 0"],
    ),
    (
        "tok-chunk-float",
        lambda e: tokenize_prompt("a", [e.tok], chunk_size=2.5),
        ValueError,
        ["chunk_size", "2.5"],
    ),
    (
        "tok-backtrack",
        lambda e: tokenize_prompt("a", [e.tok], comma_backtrack=-1),
        ValueError,
        ["comma_backtrack", "-1"],
    ),
    (
        "tok-unset-length",
        lambda e: tokenize_prompt("a", [e.unset]),
        ValueError,
        ["model_max_length", "1000000000000000019884624838656"],
    ),
    ("tok-tiny-length", lambda e: tokenize_prompt("a", [e.tiny]), ValueError, ["context of 2"]),
    # Conditioning
    (
        "cond-str",
        lambda e: _cond(e, prompt_embeds="x")(),
        ValueError,
        ["prompt_embeds must be", "'x'"],
    ),
    (
        "cond-2d",
        lambda e: _cond(e, negative_prompt_embeds=T(1, 4))(),
        ValueError,
        ["negative_prompt_embeds must be", "(1, 4)"],
    ),
    (
        "cond-shape",
        lambda e: _cond(e, negative_prompt_embeds=T(2, 77, 32))(),
        ValueError,
        ["negative_prompt_embeds", "(2, 77, 32)"],
    ),
    (
        "cond-pooled-half",
        lambda e: _cond(e, negative_pooled_prompt_embeds=None)(),
        ValueError,
        ["negative_pooled_prompt_embeds", "NoneType"],
    ),
    (
        "cond-pooled-rows",
        lambda e: _cond(e, pooled_prompt_embeds=T(3, 32), negative_pooled_prompt_embeds=T(3, 32))(),
        ValueError,
        ["pooled_prompt_embeds (3, 32)", "one row per row"],
    ),
    ("cond-key", lambda e: e.cond["nope"], KeyError, ["nope"]),
    ("cond-to-device", lambda e: e.cond.to(device="gpux"), ValueError, ["device", "'gpux'"]),
    ("cond-to-dtype", lambda e: e.cond.to(dtype="float16"), TypeError, ["dtype", "'float16'"]),
    # TextEncodingCache
    ("tec-neg", lambda e: TextEncodingCache(max_entries=-1), ValueError, ["max_entries", "-1"]),
    (
        "tec-bool",
        lambda e: TextEncodingCache(max_entries=True),
        ValueError,
        ["max_entries", "True"],
    ),
    ("tec-float", lambda e: TextEncodingCache(max_bytes=1.5), ValueError, ["max_bytes", "1.5"]),
    ("tec-str", lambda e: TextEncodingCache(max_bytes="1MB"), ValueError, ["max_bytes", "'1MB'"]),
    (
        "tec-put-entry",
        lambda e: TextEncodingCache().put("k", "x"),
        TypeError,
        ["entry must be", "'x'"],
    ),
    (
        "tec-put-value",
        lambda e: TextEncodingCache().put("k", {"x": [1]}),
        TypeError,
        ["entry must be", "{'x': [1]}"],
    ),
    (
        "tec-put-key",
        lambda e: TextEncodingCache().put(["k"], {"x": T(1)}),
        TypeError,
        ["key must be hashable", "['k']"],
    ),
    (
        "tec-get-key",
        lambda e: TextEncodingCache().get({}),
        TypeError,
        ["key must be hashable", "{}"],
    ),
    # cached_text_embeds / cached_encode_text / encode_token_rows / model_key
    (
        "cte-clip",
        lambda e: cached_text_embeds(object(), "a"),
        TypeError,
        ["clip must be", "object"],
    ),
    ("cte-int", lambda e: cached_text_embeds(e.clip, 3), TypeError, ["prompts must be", "got 3"]),
    ("cte-empty", lambda e: cached_text_embeds(e.clip, []), TypeError, ["prompts must be", "[]"]),
    (
        "cte-item",
        lambda e: cached_text_embeds(e.clip, ["a", None]),
        TypeError,
        ["prompts must be", "['a', None]"],
    ),
    (
        "cte-1d",
        lambda e: cached_text_embeds(e.clip, T(77, dtype=torch.long)),
        ValueError,
        ["prompts given as a tensor", "(77,)"],
    ),
    (
        "cte-float",
        lambda e: cached_text_embeds(e.clip, T(1, 77)),
        ValueError,
        ["prompts given as a tensor", "float32"],
    ),
    (
        "cte-vocab",
        lambda e: cached_text_embeds(e.clip, torch.full((1, 77), 10**6)),
        ValueError,
        ["ids must be token ids in [0, 49408)", "1000000"],
    ),
    (
        "cte-negative-id",
        lambda e: cached_text_embeds(e.clip, torch.full((1, 77), -1)),
        ValueError,
        ["ids must be token ids", "-1"],
    ),
    (
        "cte-too-long",
        lambda e: cached_text_embeds(e.clip, torch.zeros((1, 100), dtype=torch.long)),
        ValueError,
        ["ids has 100 tokens", "at most 77"],
    ),
    (
        "cte-no-rows",
        lambda e: cached_text_embeds(e.clip, torch.zeros((0, 77), dtype=torch.long)),
        ValueError,
        ["ids must be", "(0, 77)"],
    ),
    ("cte-cache", lambda e: cached_text_embeds(e.clip, "a", cache=1), TypeError, ["cache", "1"]),
    (
        "cet-layer",
        lambda e: cached_encode_text(e.clip, "a", hidden_layer=99),
        ValueError,
        ["hidden_layer", "99"],
    ),
    (
        "cet-layer-str",
        lambda e: cached_encode_text(e.clip, "a", hidden_layer="2"),
        ValueError,
        ["hidden_layer", "'2'"],
    ),
    (
        "etr-ids",
        lambda e: encode_token_rows(e.clip.text_model, [[1, 2]]),
        ValueError,
        ["ids must be", "[[1, 2]]"],
    ),
    ("key-module", lambda e: model_key("model"), TypeError, ["module must be", "str"]),
    # CLIPScorer, text side
    ("sc-cache", lambda e: CLIPScorer(e.clip, cache="x"), TypeError, ["cache must be", "'x'"]),
    ("sc-size", lambda e: CLIPScorer(e.clip, cache_size=-1), ValueError, ["cache_size", "-1"]),
    ("sc-size-f", lambda e: CLIPScorer(e.clip, cache_size=1.5), ValueError, ["cache_size", "1.5"]),
    (
        "sc-size-b",
        lambda e: CLIPScorer(e.clip, cache_size=True),
        ValueError,
        ["cache_size", "True"],
    ),
    ("sc-scale", lambda e: CLIPScorer(e.clip, scale=0), ValueError, ["scale", "got 0"]),
    ("sc-scale-str", lambda e: CLIPScorer(e.clip, scale="100"), TypeError, ["scale", "'100'"]),
    ("sc-texts", lambda e: CLIPScorer(e.clip).embed_texts(3), TypeError, ["prompts", "got 3"]),
    ("sc-texts-empty", lambda e: CLIPScorer(e.clip).embed_texts([]), TypeError, ["prompts", "[]"]),
    (
        "sc-texts-item",
        lambda e: CLIPScorer(e.clip).embed_texts(["a", None]),
        TypeError,
        ["prompts", "['a', None]"],
    ),
    (
        "sc-rerank",
        lambda e: CLIPScorer(e.clip).rerank(torch.rand(1, 3, 32, 32), ["a"]),
        TypeError,
        ["prompt must be a str", "['a']"],
    ),
    (
        "sc-count",
        lambda e: CLIPScorer(e.clip).score(torch.rand(2, 3, 32, 32), ["a", "b", "c"]),
        ValueError,
        ["prompts must be one string or one per image (2)", "got 3"],
    ),
]


@pytest.mark.parametrize(
    "call, error, fragments", [c[1:] for c in RAISES], ids=[c[0] for c in RAISES]
)
def test_bad_input_raises_naming_argument_and_value(env, call, error, fragments):
    with pytest.raises(error) as info:
        call(env)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    raised_in = info.traceback[-1].path
    assert PACKAGE in raised_in.parents  # clipguide's own check, early


# documented fallbacks: read as A1111 reads it, with one PromptSyntaxWarning naming a position
FALLBACKS = [
    ("a (red cat", "unclosed '(' at position 2"),
    ("a red) cat", "')' at position 5 closes nothing"),
    ("a [b:c:0.5]", "prompt editing"),
    ("a [b|c]", "alternation"),
    ("a AND b", "'AND' at position 2"),
    ("(a:1.2.3)", "malformed weight '1.2.3' at position 3"),
]


@pytest.mark.parametrize("prompt, fragment", FALLBACKS)
def test_lenient_prompts_encode_with_one_warning(env, prompt, fragment):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cond = encode_prompt(env.clip, prompt, cache=False)
    ours = [w for w in caught if issubclass(w.category, PromptSyntaxWarning)]
    assert len(ours) == 1 and fragment in str(ours[0].message)
    assert torch.isfinite(cond["prompt_embeds"]).all()
    with pytest.raises(ValueError, match="prompt has"):
        encode_prompt(env.clip, prompt, strict=True, cache=False)
