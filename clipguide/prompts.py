"""Prompt weight syntax and long-prompt chunking (pure; a tokenizer is the only dependency).

Syntax (A1111 style):

- ``(text)`` multiplies the weight of ``text`` by 1.1, ``[text]`` divides it by 1.1;
- ``(text:1.3)`` multiplies it by 1.3 (the number after the last ``:`` of a round group);
- groups nest and their weights multiply: ``((a) b:2)`` gives ``a`` 2.2 and ``b`` 2;
- ``\\(``, ``\\)``, ``\\[``, ``\\]``, ``\\:`` and ``\\\\`` are literal characters; a backslash
  before any other character is itself literal;
- ``BREAK`` (upper case, on its own between spaces) starts a new 75-token chunk;
- a ``:`` outside round groups is literal (``16:9``).

Malformed prompts are errors, never silently read literally: an unclosed or unexpected bracket,
a ``:`` weight that is not a finite number, or a ``:`` weight inside square brackets raises
``ValueError`` naming the character position. Pass ``parse_weights=False`` (in
``encode_prompt``) to read a prompt literally instead.

Chunking works on the tokenizer's per-word token ids: a chunk holds at most 75 tokens (77 with
start and end tokens) and is cut after the last comma among its final ``comma_backtrack``
tokens, else after the last whole word, and only mid-word when one word is longer than a chunk.
"""

from __future__ import annotations

import math
import re
import weakref
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

__all__ = [
    "PromptChunks",
    "parse_prompt",
    "plain_text",
    "chunk_tokens",
    "tokenize_prompt",
    "chunk_tensors",
    "word_ids",
]

ROUND_FACTOR = 1.1
_ESCAPABLE = "()[]:\\"
_BREAK = re.compile(r"(?<!\S)BREAK(?!\S)")
_NUMBER = re.compile(r"\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*")

Section = list[tuple[str, float]]


def parse_prompt(prompt: str) -> list[Section]:
    """Split ``prompt`` into sections (separated by ``BREAK``) of ``(text, weight)`` runs.

    Adjacent runs of equal weight are merged; empty runs are dropped; sections that hold no
    text are dropped, except that an empty prompt gives one empty section.
    """
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a str, got {type(prompt).__name__}: {prompt!r}")
    runs: list[tuple[str, tuple[int, ...]]] = []  # (text, indices of enclosing groups)
    factors: list[float] = []  # one multiplier per group, in opening order
    stack: list[tuple[str, int, int]] = []  # open groups: (bracket, position, group index)
    buf: list[str] = []

    def flush() -> None:
        if buf:
            runs.append(("".join(buf), tuple(g for _, _, g in stack)))
            buf.clear()

    i, n = 0, len(prompt)
    while i < n:
        c = prompt[i]
        if c == "\\":
            if i + 1 < n and prompt[i + 1] in _ESCAPABLE:
                buf.append(prompt[i + 1])
                i += 2
            else:
                buf.append(c)
                i += 1
            continue
        if c in "([":
            flush()
            stack.append((c, i, len(factors)))
            factors.append(ROUND_FACTOR if c == "(" else 1 / ROUND_FACTOR)
        elif c in ")]":
            want = "(" if c == ")" else "["
            if not stack:
                raise ValueError(
                    f"prompt has an unexpected {c!r} at position {i}: {_excerpt(prompt, i)}; "
                    f"escape it as '\\{c}' for a literal bracket"
                )
            opener, start, group = stack[-1]
            if opener != want:
                raise ValueError(
                    f"prompt has {c!r} at position {i} closing {opener!r} opened at position "
                    f"{start}: {_excerpt(prompt, i)}"
                )
            explicit = _take_weight(buf, prompt, i, opener)
            if explicit is not None:
                factors[group] = explicit
            flush()
            stack.pop()
        else:
            buf.append(c)
        i += 1
    if stack:
        opener, start, _ = stack[-1]
        raise ValueError(
            f"prompt has an unclosed {opener!r} opened at position {start}: "
            f"{_excerpt(prompt, start)}; close it or escape it as '\\{opener}'"
        )
    flush()
    return _sections([(t, math.prod((factors[g] for g in gs), start=1.0)) for t, gs in runs])


def _take_weight(buf: list[str], prompt: str, close_at: int, opener: str) -> float | None:
    """Pop a trailing ``:number`` from the group's last text buffer; None if there is none."""
    text = "".join(buf)
    # only an unescaped colon counts; escaped ones were already unescaped into buf, so find
    # the position in the source: scan back from the closing bracket
    j = close_at - 1
    while j >= 0 and prompt[j] not in "()[]":
        if prompt[j] == ":" and not _escaped(prompt, j):
            break
        j -= 1
    if j < 0 or prompt[j] != ":":
        return None
    tail = prompt[j + 1 : close_at]
    if opener == "[":
        raise ValueError(
            f"prompt has a ':' weight inside square brackets at position {j}: "
            f"{_excerpt(prompt, j)}; explicit weights go in round brackets, '(text:1.2)'"
        )
    if not _NUMBER.fullmatch(tail) or not math.isfinite(float(tail)):
        raise ValueError(
            f"prompt has a non-numeric weight {tail.strip()!r} at position {j + 1}: "
            f"{_excerpt(prompt, j)}; write '(text:1.2)', or '\\:' for a literal colon"
        )
    cut = len(text) - (close_at - j)
    del buf[cut:]
    return float(tail)


def _escaped(prompt: str, j: int) -> bool:
    k, slashes = j - 1, 0
    while k >= 0 and prompt[k] == "\\":
        slashes += 1
        k -= 1
    return slashes % 2 == 1


def _excerpt(prompt: str, i: int, width: int = 20) -> str:
    lo, hi = max(0, i - width), min(len(prompt), i + width + 1)
    return f"...{prompt[lo:hi]!r}..." if (lo or hi < len(prompt)) else repr(prompt)


def _sections(runs: list[tuple[str, float]]) -> list[Section]:
    sections: list[Section] = [[]]
    for text, w in runs:
        for k, piece in enumerate(_BREAK.split(text)):
            if k:
                sections.append([])
            if not piece:
                continue
            sec = sections[-1]
            if sec and sec[-1][1] == w:
                sec[-1] = (sec[-1][0] + piece, w)
            else:
                sec.append((piece, w))
    kept = [s for s in sections if any(t.strip() for t, _ in s)]
    return kept or [[]]


def plain_text(prompt: str) -> str:
    """The prompt without weight syntax (for encoders that take no weights, e.g. T5)."""
    return " ".join("".join(t for t, _ in sec).strip() for sec in parse_prompt(prompt)).strip()


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


def tokenize_prompt(
    prompt: str,
    tokenizers: Sequence[Any],
    *,
    parse_weights: bool = True,
    chunk_size: int = 75,
    comma_backtrack: int = 20,
) -> PromptChunks:
    """Parse ``prompt`` and cut its tokens into chunks (no start/end tokens yet).

    Every tokenizer must give the same ids for each word (true of SDXL's two tokenizers,
    which share one BPE vocabulary and differ only in the padding token).
    """
    sections = parse_prompt(prompt) if parse_weights else [[(prompt, 1.0)]]
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
