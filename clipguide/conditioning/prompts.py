"""Prompt weight syntax and long-prompt chunking (pure; a tokenizer is the only dependency).

Syntax (A1111's attention syntax, read as ``parse_prompt_attention`` of stable-diffusion-webui
reads it, with the differences listed below):

- ``(text)`` multiplies the weight of ``text`` by 1.1, ``[text]`` divides it by 1.1;
- ``(text:1.3)`` multiplies it by 1.3 (a number after the last ``:`` of a round group);
- groups nest and their weights multiply: ``((a) b:2)`` gives ``a`` 2.2 and ``b`` 2;
- ``\\(``, ``\\)``, ``\\[``, ``\\]``, ``\\:`` and ``\\\\`` are literal characters;
- ``BREAK`` (upper case, a whole word) starts a new chunk;
- a ``:`` that does not end a round group in a number is literal (``16:9 ratio``, ``[a:b]``).

Malformed prompts are read the way A1111 reads them, with one :class:`PromptSyntaxWarning` per
prompt naming each repair and its character position: a group left open closes at the end of
the prompt, a closing bracket with no open group of its kind is a literal character, a ``)``
closes the last open ``(`` even across an open ``[`` (and ``]`` the last ``[``), and a malformed
weight such as ``(a:1.2.3)`` leaves its ``:`` literal. A1111 syntax that clipguide does not
implement is read as text with the same warning: prompt editing ``[a:b:0.5]`` / ``[a:0.5]``,
alternation ``[a|b]``, composable diffusion ``a AND b`` and extra-network tags
``<lora:name:0.8>`` (load LoRAs into the pipeline instead), and compel's ``word++`` /
``word--``. ``strict=True`` raises
``ValueError`` naming the position instead of any warning (and for any ``:`` directly inside
square brackets); ``parse_weights=False`` (in ``encode_prompt``) reads a prompt literally.

A weight whose product over the nested groups is not finite or exceeds float32's range
(``((a:1e300):1e300)``, 1,000 nested ``(``) raises ``ValueError`` naming the span and its
position, in either mode.

Differences from A1111: a weight may carry spaces and an exponent (``( red : 1e-1 )`` is
``red`` at 0.1; A1111 reads such a tail as literal text and multiplies by 1.1); a backslash
before any other character stays in the text (A1111 drops it); ``BREAK`` inside a group still
starts a chunk.

Chunking works on the tokenizer's per-word token ids: a chunk holds at most the tokenizer's
``model_max_length - 2`` tokens (75 for CLIP's 77) and is cut after the last comma among its
final ``comma_backtrack`` tokens, else after the last whole word, and only mid-word when one
word is longer than a chunk.
"""

from __future__ import annotations

import re
import weakref
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from clipguide.conditioning.syntax import (
    MAX_WEIGHT,
    PromptSyntaxWarning,
    Section,
    parse_prompt,
    plain_text,
    weight_spans,
)

__all__ = [
    "PromptChunks",
    "PromptSyntaxWarning",
    "parse_prompt",
    "plain_text",
    "chunk_tokens",
    "tokenize_prompt",
    "chunk_tensors",
    "word_ids",
    "weight_spans",
    "context_length",
    "MAX_WEIGHT",
]


@dataclass(frozen=True)
class PromptChunks:
    """Token ids (without start/end tokens) and per-token weights, one tuple per chunk."""

    ids: tuple[tuple[int, ...], ...]
    weights: tuple[tuple[float, ...], ...]

    @property
    def num_tokens(self) -> int:
        return sum(len(c) for c in self.ids)


def chunk_tokens(
    ids: Sequence[int],
    boundaries: Sequence[int],
    chunk_size: int = 75,
    comma_backtrack: int = 20,
) -> list[tuple[int, int]]:
    """Cut one section into ``(start, end)`` spans of at most ``chunk_size`` tokens.

    ``boundaries[i]`` says what ends after token ``i``: 0 nothing (mid-word), 1 a word,
    2 a word ending in a comma. A span ends after the last comma among its last
    ``comma_backtrack`` tokens, else after its last whole word, else at ``chunk_size``.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    n, start, spans = len(ids), 0, []
    while n - start > chunk_size:
        end = start + chunk_size
        cut = next(
            (
                s
                for s in range(end, max(start, end - comma_backtrack), -1)
                if boundaries[s - 1] == 2
            ),
            None,
        )
        if cut is None:
            cut = next((s for s in range(end, start, -1) if boundaries[s - 1] >= 1), end)
        spans.append((start, cut))
        start = cut
    spans.append((start, n))
    return spans


def _words(section: Section) -> list[tuple[str, float, bool]]:
    """(word, weight, glued_to_previous) for each whitespace-separated piece of each run."""
    out: list[tuple[str, float, bool]] = []
    prev_ends_word = True
    for text, w in section:
        for k, m in enumerate(re.finditer(r"\S+", text)):
            glued = k == 0 and m.start() == 0 and not prev_ends_word
            out.append((m.group(), w, glued))
        prev_ends_word = not text or text[-1].isspace()
    return out


_WORD_MEMO: weakref.WeakKeyDictionary[Any, tuple[int, OrderedDict[str, list[int]]]] = (
    weakref.WeakKeyDictionary()
)
_WORD_MEMO_SIZE = 65536


def word_ids(tokenizer: Any, words: Sequence[str]) -> list[list[int]]:
    """Token ids of each word (no start/end tokens), memoised per tokenizer.

    The memo is dropped when the tokenizer's vocabulary size changes (``add_tokens``).
    """
    try:
        size, memo = _WORD_MEMO.get(tokenizer, (-1, None))
    except TypeError:  # not weak-referenceable: no memo
        size, memo = -1, None
    if memo is None or size != len(tokenizer):
        memo = OrderedDict()
        try:
            _WORD_MEMO[tokenizer] = (len(tokenizer), memo)
        except TypeError:
            pass
    missing = list(dict.fromkeys(w for w in words if w not in memo))
    if missing:
        ids = tokenizer(missing, add_special_tokens=False)["input_ids"]
        memo.update(zip(missing, (list(x) for x in ids), strict=True))
        while len(memo) > _WORD_MEMO_SIZE:
            memo.popitem(last=False)
    return [list(memo[w]) for w in words]


_UNSET_LENGTH = 10**6  # transformers' "no limit" model_max_length is ~1e30


def context_length(tokenizer: Any, model: Any = None) -> int:
    """Tokens per sequence, start and end included: the tokenizer's ``model_max_length``.

    With ``model`` (a transformers text model), a tokenizer without a real limit falls back
    to the model's ``max_position_embeddings``, and a tokenizer limit beyond it is an error.
    """
    length = getattr(tokenizer, "model_max_length", None)
    positions = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if not isinstance(length, int) or length >= _UNSET_LENGTH:
        if positions is None:
            raise ValueError(
                f"the tokenizer has no usable model_max_length ({length!r}); set it to the text "
                "model's context (e.g. tokenizer.model_max_length = 77) or pass chunk_size"
            )
        length = int(positions)
    if positions is not None and length > positions:
        raise ValueError(
            f"the tokenizer's model_max_length ({length}) exceeds the text model's "
            f"max_position_embeddings ({positions}); set tokenizer.model_max_length = {positions}"
        )
    if length < 3:
        raise ValueError(
            f"a context of {length} tokens leaves no room for text between start and end"
        )
    return length


def tokenize_prompt(
    prompt: str,
    tokenizers: Sequence[Any],
    *,
    parse_weights: bool = True,
    chunk_size: int | None = None,
    comma_backtrack: int = 20,
    strict: bool = False,
) -> PromptChunks:
    """Parse ``prompt`` and cut its tokens into chunks (no start/end tokens yet).

    ``chunk_size`` defaults to the smallest ``model_max_length - 2`` of the tokenizers (room
    for the start and end tokens). Every tokenizer must give the same ids for each word (true
    of SDXL's two tokenizers, which share one BPE vocabulary and differ only in the padding
    token). ``strict`` as in :func:`parse_prompt`.
    """
    if (
        isinstance(tokenizers, (str, bytes))
        or not isinstance(tokenizers, Sequence)
        or not tokenizers
    ):
        raise TypeError(
            f"tokenizers must be a non-empty list of tokenizers, got {tokenizers!r:.80}"
        )
    if chunk_size is None:
        chunk_size = min(context_length(t) for t in tokenizers) - 2
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be an int >= 1, got {chunk_size!r}")
    if (
        isinstance(comma_backtrack, bool)
        or not isinstance(comma_backtrack, int)
        or comma_backtrack < 0
    ):
        raise ValueError(f"comma_backtrack must be an int >= 0, got {comma_backtrack!r}")
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a str, got {type(prompt).__name__}: {prompt!r:.80}")
    sections = parse_prompt(prompt, strict=strict) if parse_weights else [[(prompt, 1.0)]]
    words = [w for sec in sections for w in _words(sec)]
    texts = [w for w, _, _ in words]
    per_tok = [word_ids(tokenizers[0], texts)]
    for tok in tokenizers[1:]:
        if word_ids(tok, texts) != per_tok[0]:
            raise ValueError(
                "the pipeline's tokenizers give different token ids for the same words; "
                "chunked/weighted encoding needs tokenizers that share one vocabulary"
            )
    ids_out: list[tuple[int, ...]] = []
    w_out: list[tuple[float, ...]] = []
    k = 0
    for sec in sections:
        ids: list[int] = []
        weights: list[float] = []
        bounds: list[int] = []
        for _ in _words(sec):
            word, w, glued = words[k]
            wids = per_tok[0][k]
            k += 1
            if not wids:
                continue
            if glued and bounds:
                bounds[-1] = 0  # no space before this piece: not a place to cut
            ids.extend(wids)
            weights.extend([w] * len(wids))
            bounds.extend([0] * (len(wids) - 1) + [2 if word.endswith(",") else 1])
        for a, b in chunk_tokens(ids, bounds, chunk_size, comma_backtrack):
            ids_out.append(tuple(ids[a:b]))
            w_out.append(tuple(weights[a:b]))
    return PromptChunks(tuple(ids_out), tuple(w_out))


def chunk_tensors(
    chunks: PromptChunks,
    *,
    bos: int,
    eos: int,
    pad: int,
    num_chunks: int | None = None,
    length: int = 77,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids ``(C, length)`` with start/end/padding and weights ``(C, length)`` (1 off-text).

    ``num_chunks`` pads with empty chunks (start, end, padding) up to that count.
    """
    count = len(chunks.ids) if num_chunks is None else num_chunks
    if count < len(chunks.ids):
        raise ValueError(f"num_chunks={num_chunks} is less than the {len(chunks.ids)} chunks")
    ids = torch.full((count, length), pad, dtype=torch.long)
    weights = torch.ones((count, length), dtype=torch.float32)
    for c in range(count):
        body = chunks.ids[c] if c < len(chunks.ids) else ()
        if len(body) > length - 2:
            raise ValueError(f"chunk {c} has {len(body)} tokens; at most {length - 2} fit")
        ids[c, 0] = bos
        ids[c, 1 : 1 + len(body)] = torch.tensor(body, dtype=torch.long)
        ids[c, 1 + len(body)] = eos
        if body:
            weights[c, 1 : 1 + len(body)] = torch.tensor(chunks.weights[c], dtype=torch.float32)
    return ids, weights
