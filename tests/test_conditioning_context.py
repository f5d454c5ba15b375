"""encode_prompt on a text tower whose context is not 77, and weights that overflow its dtype."""

import copy

import open_clip
import pytest
import torch

from clipguide import encode_prompt, load_clip
from clipguide.conditioning.prompts import tokenize_prompt
from clipguide.testing import TINY_MODEL, register_model_configs, tiny_sdxl_pipeline_bigg_only

CONTEXT = 32
LONG = ", ".join(f"a red circle number {i}" for i in range(12))  # ~70 tokens: 3 chunks of <= 30


@pytest.fixture(scope="module")
def clip32():
    register_model_configs()
    cfg = copy.deepcopy(open_clip.get_model_config(TINY_MODEL))
    cfg["text_cfg"]["context_length"] = CONTEXT
    torch.manual_seed(0)
    model = open_clip.model.CLIP(**cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.05)
    return load_clip(model, towers=("text",))


def _reference(clip, chunk_ids):
    """Each chunk wrapped in start/end, padded to the context, encoded on its own."""
    tok = clip.tokenizer
    rows = []
    for body in chunk_ids:
        row = [tok.bos_token_id, *body, tok.eos_token_id]
        rows.append(row + [tok.pad_token_id] * (CONTEXT - len(row)))
    with torch.no_grad():
        out = clip.encode_text(torch.tensor(rows))
    return out.hidden_states.reshape(1, -1, out.hidden_states.shape[-1]), out.pooled[:1]


def test_context_32_tower_chunks_at_30_and_matches_reference(clip32):
    assert clip32.context_length == CONTEXT and clip32.tokenizer.model_max_length == CONTEXT
    cond = encode_prompt(clip32, LONG, cache=False)
    whole = clip32.tokenizer(LONG, add_special_tokens=False)["input_ids"]
    n = cond["prompt_embeds"].shape[1] // CONTEXT
    assert n == 3 and cond["prompt_embeds"].shape[1] == n * CONTEXT
    cond_ids = tokenize_prompt(LONG, [clip32.tokenizer]).ids
    assert all(len(c) <= CONTEXT - 2 for c in cond_ids) and len(cond_ids) == n
    assert sum(cond_ids, ()) == tuple(whole)  # nothing dropped or added
    hidden, pooled = _reference(clip32, cond_ids)
    assert torch.allclose(cond["prompt_embeds"], hidden, atol=1e-6)
    assert torch.allclose(cond["pooled_prompt_embeds"], pooled, atol=1e-6)
    assert max(len(c) for c in cond_ids) > 20  # chunks fill the context, not cut short


def test_context_32_pipeline_matches_diffusers(clip32):
    pipe = tiny_sdxl_pipeline_bigg_only(seed=3)
    pipe.text_encoder_2, pipe.tokenizer_2 = clip32.text_model, clip32.tokenizer
    prompt = "a red circle above a blue square"
    with torch.no_grad():
        ref, _, ref_pooled, _ = pipe.encode_prompt(prompt, do_classifier_free_guidance=False)
    cond = encode_prompt(pipe, prompt, cache=False)
    assert cond["prompt_embeds"].shape == ref.shape == (1, CONTEXT, 32)
    assert torch.equal(cond["prompt_embeds"], ref)
    assert torch.equal(cond["pooled_prompt_embeds"], ref_pooled)
    long = encode_prompt(pipe, LONG, cache=False)
    assert long["prompt_embeds"].shape[1] == 3 * CONTEXT


def test_weight_overflowing_fp16_is_refused_naming_the_span(clip32):
    half = copy.deepcopy(clip32).to(dtype=torch.float16)
    fine = encode_prompt(half, "a (red:2) circle", cache=False)
    assert torch.isfinite(fine["prompt_embeds"]).all()
    with pytest.raises(ValueError, match="overflows torch.float16") as info:
        encode_prompt(half, "a (red:1e9) circle", cache=False)
    message = str(info.value)
    assert "the span 'red' at position 3" in message and "weight 1e+09" in message
    full = encode_prompt(clip32, "a (red:1e9) circle", cache=False)  # fp32 holds it
    assert torch.isfinite(full["prompt_embeds"]).all()
