"""Prompt embeddings for diffusers pipelines: long prompts, per-token weights, cached encodes.

``encode_prompt(pipe, prompt, negative_prompt)`` returns a :class:`Conditioning`, a frozen
mapping whose keys are exactly the pipeline's embedding arguments, so ``pipe(**cond)`` works.

Conventions (see also :mod:`clipguide.conditioning.prompts`):

- a prompt longer than the context (the tokenizer's ``model_max_length``: 77 for SD/SDXL) is
  cut into chunks of up to ``model_max_length - 2`` tokens, each wrapped in start and end
  tokens and padded to the context, encoded separately and concatenated along the sequence;
  every prompt and negative prompt of a call is padded with empty chunks to the same count;
- weights interpolate each token's hidden state from the empty prompt's,
  ``z_empty + w * (z - z_empty)``, for every weight (above and below 1); tokens of weight 1
  are untouched. ComfyUI (``ClipTokenWeightEncoder``) does exactly this. compel's
  ``EmbeddingsProvider`` applies the same interpolation to every token, but for a fragment
  weighted below 1 it then also blends the whole sequence with an encode in which that
  fragment is masked out (its default ``DownweightMode.MASK``; or removed), so compel's
  results differ from ours for weights below 1. A weighted state that overflows the tower's
  dtype (``(x:1e9)`` in fp16) raises ``ValueError`` naming the span;
- the pooled embedding is the end-token embedding of the *first* chunk, unweighted
  (the A1111/ComfyUI convention);
- ``clip_skip`` selects the layer for the prompt *and* the negative prompt (diffusers applies it
  to the prompt only);
- ``negative_prompt=None`` follows the pipeline's ``force_zeros_for_empty_prompt`` (zeros),
  ``""`` encodes the empty prompt;
- textual-inversion tokens are expanded by the pipeline's ``maybe_convert_prompt``; a
  ``lora_scale`` is not applied (text-encoder LoRA layers run at their loaded scale);
- encodes are cached (:mod:`clipguide.model.text_cache`, which says which weight changes it sees);
  results equal a fresh encode of the same batch bit for bit, and a fresh encode of any other
  batch to float rounding (<= 1e-6 in fp32).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from clipguide.conditioning.embeddings import Conditioning
from clipguide.conditioning.prompts import (
    PromptChunks,
    chunk_tensors,
    context_length,
    plain_text,
    tokenize_prompt,
    weight_spans,
)
from clipguide.conditioning.towers import Target, hidden_layer, text_towers
from clipguide.model.text_cache import (
    TextEncodingCache,
    encode_token_rows,
    model_key,
    resolve_cache,
)

__all__ = ["Conditioning", "encode_prompt", "weight_hidden_states"]


def weight_hidden_states(
    hidden: torch.Tensor, weights: torch.Tensor, empty: torch.Tensor
) -> torch.Tensor:
    """Per-token ``empty + w * (hidden - empty)``; positions with ``w == 1`` are returned as is.

    Args:
        hidden: (N, L, d) hidden states of N chunks.
        weights: (N, L) token weights.
        empty: (L, d) hidden states of the empty chunk (start, end, padding).
    """
    w = weights.to(device=hidden.device, dtype=torch.float32)[..., None]
    z, z0 = hidden.float(), empty.float()[None]
    mixed = (z0 + w * (z - z0)).to(hidden.dtype)
    return torch.where(w == 1, hidden, mixed)


def _as_list(value: Any, name: str) -> list[str]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, Sequence) or not items or not all(isinstance(p, str) for p in items):
        raise TypeError(f"{name} must be a str or a non-empty list of str, got {value!r}")
    return list(items)


def _encode_side(
    target: Target,
    texts: list[list[str]],
    chunks: list[list[PromptChunks]],
    num_chunks: int,
    layers: list[int],
    keys: list[Any],
    cache: TextEncodingCache | bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(B, num_chunks*L, sum d) hidden states and (B, sum D) first-chunk pooled; ``texts``
    and ``chunks`` hold one list per tower."""
    b = len(chunks[0])
    hidden_parts, pooled_parts = [], []
    towers = zip(target.towers, layers, keys, texts, chunks, strict=True)
    for tower, layer, key, tower_texts, tower_chunks in towers:
        tok = tower.tokenizer
        length = context_length(tok, tower.model)
        special = {"bos": tok.bos_token_id, "eos": tok.eos_token_id, "pad": tok.pad_token_id}
        rows = [
            chunk_tensors(c, **special, num_chunks=num_chunks, length=length) for c in tower_chunks
        ]
        ids = torch.cat([r[0] for r in rows])
        weights = torch.cat([r[1] for r in rows])
        kw = {"hidden_layer": layer, "final_norm": tower.final_norm, "cache": cache, "key": key}
        hidden, pooled = encode_token_rows(tower.model, ids, **kw)
        if bool((weights != 1).any()):
            empty_ids, _ = chunk_tensors(PromptChunks(((),), ((),)), **special, length=length)
            empty, _ = encode_token_rows(tower.model, empty_ids, **kw)
            weighted = weight_hidden_states(hidden, weights, empty[0])
            _check_finite(weighted.to(target.dtype), hidden, weights, tower_texts, num_chunks)
            hidden = weighted
        hidden_parts.append(hidden.reshape(b, num_chunks * length, hidden.shape[-1]))
        if tower.pooled:
            pooled_parts.append(pooled.reshape(b, num_chunks, -1)[:, 0])
    hidden = torch.cat(hidden_parts, dim=-1)
    pooled = torch.cat(pooled_parts, dim=-1) if pooled_parts else None
    return hidden, pooled


def _check_finite(
    weighted: torch.Tensor,
    hidden: torch.Tensor,
    weights: torch.Tensor,
    texts: list[str],
    num_chunks: int,
) -> None:
    """Refuse token weights whose interpolated state overflows the embeddings' dtype."""
    bad = (~torch.isfinite(weighted).all(dim=-1) & torch.isfinite(hidden).all(dim=-1)).cpu()
    if not bool(bad.any()):
        return
    row, pos = (int(i) for i in bad.nonzero()[0])
    w = float(weights[row, pos])
    text = texts[row // num_chunks]
    spans = weight_spans(text, w)
    where = f"the span {spans[0][0]!r} at position {spans[0][1]}" if spans else "a span"
    limit = torch.finfo(weighted.dtype).max
    raise ValueError(
        f"prompt {text!r:.80}: {where} has weight {w:.4g}, and z_empty + w * (z - z_empty) "
        f"overflows {weighted.dtype} (|value| > {limit:.3g}); use a smaller weight"
    )


def _check_flag(value: Any, name: str, allow_none: bool = False) -> None:
    if not (isinstance(value, bool) or (allow_none and value is None)):
        accepted = "True, False or None" if allow_none else "True or False"
        raise TypeError(f"{name} must be {accepted}, got {value!r}")


def _check_count(value: Any, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")


def _chunk_size(target: Target) -> int:
    """Tokens per chunk: the towers' common context less the start and end tokens."""
    lengths = {context_length(t.tokenizer, t.model) for t in target.towers}
    if len(lengths) > 1:
        raise ValueError(
            f"the pipeline's text encoders have different contexts {sorted(lengths)}; their "
            "hidden states cannot be joined token by token"
        )
    return lengths.pop() - 2


def _negatives(negative_prompt: Any, batch: int, force_zeros: bool) -> list[str] | None:
    """One negative prompt per prompt, or None for zeros (``force_zeros_for_empty_prompt``)."""
    if negative_prompt is None:
        return None if force_zeros else [""] * batch
    negatives = _as_list(negative_prompt, "negative_prompt")
    if isinstance(negative_prompt, str):
        return negatives * batch
    if len(negatives) != batch:
        raise ValueError(
            f"negative_prompt has {len(negatives)} prompts but prompt has {batch}; give one "
            "negative prompt, or one per prompt"
        )
    return negatives


def _textual_inversion(pipe_or_clip: Any, tokenizer: Any) -> Callable[[str], str]:
    """The pipeline's own expansion of multi-vector tokens, on the raw text (identity when no
    textual-inversion token is loaded, which also spares its long-prompt warning)."""
    convert = getattr(pipe_or_clip, "maybe_convert_prompt", None)
    special = set(getattr(tokenizer, "all_special_tokens", ()))
    added = getattr(tokenizer, "added_tokens_encoder", {})
    if not callable(convert) or not any(t not in special for t in added):
        return lambda text: text
    return lambda text: convert(text, tokenizer)


def _encode_sides(
    pipe_or_clip: Any,
    target: Target,
    prompts: list[list[str]],
    negatives: list[list[str]] | None,
    options: dict[str, Any],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """(hidden, negative hidden, pooled, negative pooled) of the CLIP towers; zeros for the
    negative side when ``negatives`` is None. ``prompts``/``negatives``: one list per tower."""
    toks = [t.tokenizer for t in target.towers]
    converted = _textual_inversion(pipe_or_clip, toks[0])
    chunk_size = _chunk_size(target)
    tokenized: dict[str, PromptChunks] = {}

    def tokenize(text: str) -> PromptChunks:
        if text not in tokenized:
            tokenized[text] = tokenize_prompt(
                text, toks, parse_weights=options["parse_weights"], chunk_size=chunk_size,
                strict=options["strict"],
            )  # fmt: skip
        return tokenized[text]

    pos_texts = [[converted(p) for p in ps] for ps in prompts]
    neg_texts = [[converted(p) for p in ps] for ps in negatives] if negatives is not None else []
    pos = [[tokenize(p) for p in ps] for ps in pos_texts]
    neg = [[tokenize(p) for p in ps] for ps in neg_texts]
    num_chunks = max(len(c.ids) for side in pos + neg for c in side)
    cache = options["cache"]
    # one weights check per tower and call (the key is what the cache is keyed on)
    keys = [model_key(t.model) if resolve_cache(cache) is not None else None for t in target.towers]
    layers = [hidden_layer(t, options["clip_skip"]) for t in target.towers]

    def side(texts: list[list[str]], chunks: list[list[PromptChunks]]) -> tuple:
        return _encode_side(target, texts, chunks, num_chunks, layers, keys, cache)

    hidden, pooled = side(pos_texts, pos)
    if negatives is None:
        neg_pooled = torch.zeros_like(pooled) if pooled is not None else None
        return hidden, torch.zeros_like(hidden), pooled, neg_pooled
    neg_hidden, neg_pooled = side(neg_texts, neg)
    return hidden, neg_hidden, pooled, neg_pooled


def _per_tower(
    target: Target, first: list[str] | None, second: Any, name: str
) -> list[list[str]] | None:
    """One text list per tower: the first tower gets ``first``, the second ``second`` (as
    SDXL/SD3 pipelines give ``prompt_2`` to ``tokenizer_2``), or ``first`` when None."""
    if second is None:
        return None if first is None else [first] * len(target.towers)
    if len(target.towers) < 2:
        raise ValueError(
            f"{name} is for pipelines with two CLIP text encoders (SDXL base, SD3); this one "
            f"has one, got {name}={second!r:.80}"
        )
    if first is None:
        raise ValueError(f"{name} needs negative_prompt too (None means zeros), got {second!r:.80}")
    seconds = _as_list(second, name)
    if isinstance(second, str):
        seconds = seconds * len(first)
    if len(seconds) != len(first):
        raise ValueError(
            f"{name} has {len(seconds)} prompts but there are {len(first)}; give one, or one each"
        )
    return [first, seconds]


def _with_t5(
    target: Target, hidden: torch.Tensor, neg_hidden: torch.Tensor, prompts: list[str],
    negatives: list[str] | None, options: dict[str, Any],
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """SD3: T5's tokens after the CLIP states, for the prompt and the negative prompt."""
    length = options["max_sequence_length"]

    def texts(ps: list[str]) -> list[str]:
        if not options["parse_weights"]:
            return ps
        return [plain_text(p, strict=options["strict"], warn=False) for p in ps]

    hidden = _join_t5(hidden, target.t5(texts(prompts), length))
    if negatives is None:
        return hidden, torch.zeros_like(hidden)
    return hidden, _join_t5(neg_hidden, target.t5(texts(negatives), length))


def encode_prompt(
    pipe_or_clip: Any,
    prompt: str | Sequence[str],
    negative_prompt: str | Sequence[str] | None = None,
    *,
    prompt_2: str | Sequence[str] | None = None,
    negative_prompt_2: str | Sequence[str] | None = None,
    num_images_per_prompt: int = 1,
    clip_skip: int | None = None,
    parse_weights: bool = True,
    strict: bool = False,
    force_zeros_for_empty_prompt: bool | None = None,
    max_sequence_length: int = 256,
    device: torch.device | str | None = None,
    cache: TextEncodingCache | bool = True,
) -> Conditioning:
    """Encode prompts into the embedding arguments of ``pipe_or_clip``'s pipeline call.

    Args:
        pipe_or_clip: an SD 1/2, SDXL (base, refiner, bigG-only) or SD3 pipeline, or a
            clipguide CLIP (then SDXL-refiner-style bigG embeddings).
        prompt: one prompt or a batch; weight syntax and ``BREAK`` as in
            :mod:`clipguide.conditioning.prompts`; no length limit.
        negative_prompt: None, one (used for every prompt) or one per prompt.
        prompt_2, negative_prompt_2: as SDXL and SD3 pipelines take them, the text of the
            second CLIP text encoder (``tokenizer_2``, bigG in SDXL); default: ``prompt`` and
            ``negative_prompt``. ``negative_prompt_2`` needs ``negative_prompt`` (None there
            means zeros).
        num_images_per_prompt: rows per prompt, as the pipeline argument of that name.
        clip_skip: layers skipped before the one the pipeline conditions on.
        parse_weights: False reads brackets, ``:`` and ``BREAK`` literally.
        strict: raise ``ValueError`` for malformed or unsupported prompt syntax instead of
            reading it as A1111 does with a :class:`~clipguide.conditioning.PromptSyntaxWarning`.
        force_zeros_for_empty_prompt: zeros for ``negative_prompt=None``; default: the
            pipeline's config (False for a CLIP).
        max_sequence_length: SD3's T5 sequence length (T5 gets the text without weights).
        device: where the embeddings go; default the pipeline's execution device.
        cache: True (shared cache), False, or a
            :class:`~clipguide.model.text_cache.TextEncodingCache`.
    """
    _check_count(num_images_per_prompt, "num_images_per_prompt")
    _check_flag(parse_weights, "parse_weights")
    _check_flag(strict, "strict")
    _check_flag(force_zeros_for_empty_prompt, "force_zeros_for_empty_prompt", allow_none=True)
    _check_count(max_sequence_length, "max_sequence_length")
    resolve_cache(cache)  # checks it
    target = text_towers(pipe_or_clip, force_zeros_for_empty_prompt, device)
    for tower in target.towers:
        hidden_layer(tower, clip_skip)  # checks clip_skip before any work
    _chunk_size(target)
    prompts = _as_list(prompt, "prompt")
    negatives = _negatives(negative_prompt, len(prompts), target.force_zeros)
    options = dict(
        parse_weights=parse_weights, strict=strict, clip_skip=clip_skip, cache=cache,
        max_sequence_length=max_sequence_length,
    )  # fmt: skip
    hidden, neg_hidden, pooled, neg_pooled = _encode_sides(
        pipe_or_clip, target, _per_tower(target, prompts, prompt_2, "prompt_2"),
        _per_tower(target, negatives, negative_prompt_2, "negative_prompt_2"), options,
    )  # fmt: skip
    if target.t5 is not None:
        hidden, neg_hidden = _with_t5(target, hidden, neg_hidden, prompts, negatives, options)

    def out(x: torch.Tensor | None, cast: bool) -> torch.Tensor | None:
        if x is None:
            return None
        x = x.to(device=target.device, dtype=target.dtype if cast else None)
        return x if num_images_per_prompt == 1 else x.repeat_interleave(num_images_per_prompt, 0)

    def texts(ps: list[str] | None) -> tuple[str, ...] | None:
        if ps is None:
            return None
        plain = [plain_text(p, strict=False, warn=False) if parse_weights else p for p in ps]
        return tuple(p for p in plain for _ in range(num_images_per_prompt))

    return Conditioning(
        prompt_embeds=out(hidden, True),
        negative_prompt_embeds=out(neg_hidden, True),
        pooled_prompt_embeds=out(pooled, False),
        negative_pooled_prompt_embeds=out(neg_pooled, False),
        prompt=texts(prompts),
        negative_prompt=texts(negatives),
    )


def _join_t5(clip_hidden: torch.Tensor, t5: torch.Tensor) -> torch.Tensor:
    """SD3 layout: CLIP states zero-padded to T5's width, then T5's tokens after them."""
    clip_hidden = F.pad(clip_hidden.to(t5.dtype), (0, t5.shape[-1] - clip_hidden.shape[-1]))
    return torch.cat([clip_hidden, t5.to(clip_hidden.device)], dim=-2)
