"""The parser of clipguide's prompt weight syntax (described in :mod:`clipguide.conditioning.prompts`).

Pure Python: a prompt string in, ``(text, weight)`` runs out, with A1111's lenient reading of
malformed prompts (one :class:`PromptSyntaxWarning` per prompt) or ``strict`` errors.
"""

from __future__ import annotations

import math
import re
import sys
import warnings
from dataclasses import dataclass, field

import torch

__all__ = [
    "MAX_WEIGHT",
    "PromptSyntaxWarning",
    "Section",
    "parse_prompt",
    "plain_text",
    "weight_spans",
]

ROUND_FACTOR = 1.1
MAX_WEIGHT = float(torch.finfo(torch.float32).max)
"""Largest token weight (in magnitude): weights are held and applied in float32."""
_ESCAPABLE = "()[]:\\"
_BREAK = re.compile(r"\bBREAK\b")
_AND = re.compile(r"\bAND\b")
_EXTRA_NETWORK = re.compile(r"<(?:lora|lyco|hypernet):[^>]*>", re.IGNORECASE)
_COMPEL = re.compile(r"(?<=[\w)])(?:\+\++|--+)(?=[\s,.;]|$)")
_NUMBER = re.compile(r"\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*")
_NUMBERISH = re.compile(r"\s*[-+.\deE]*\s*")  # a tail that was probably meant as a weight
_MAX_LISTED = 5

Section = list[tuple[str, float]]


class PromptSyntaxWarning(UserWarning):
    """A prompt was read leniently (as A1111 reads it) or uses A1111 syntax not implemented."""


@dataclass
class _Group:
    bracket: str  # "(" or "["
    start: int  # position of the opening bracket
    index: int  # index into the factor list
    bar: int | None = None  # position of the first "|" directly inside (alternation)


@dataclass
class _Parse:
    """Runs of text with the groups enclosing them, group factors, and what was repaired."""

    prompt: str
    strict: bool
    runs: list[tuple[str, tuple[int, ...], int]] = field(default_factory=list)
    factors: list[float] = field(default_factory=list)
    groups: list[_Group] = field(default_factory=list)  # open, in opening order
    buf: list[str] = field(default_factory=list)
    buf_start: int = 0
    issues: list[str] = field(default_factory=list)

    def flush(self, next_start: int) -> None:
        if self.buf:
            runs_in = tuple(g.index for g in self.groups)
            self.runs.append(("".join(self.buf), runs_in, self.buf_start))
            self.buf.clear()
        self.buf_start = next_start

    def problem(self, strict_message: str, lenient_message: str) -> None:
        if self.strict:
            raise ValueError(f"prompt has {strict_message}")
        self.issues.append(lenient_message)

    def excerpt(self, i: int) -> str:
        return _excerpt(self.prompt, i)


def parse_prompt(prompt: str, *, strict: bool = False) -> list[Section]:
    """Split ``prompt`` into sections (separated by ``BREAK``) of ``(text, weight)`` runs.

    Adjacent runs of equal weight are merged; empty runs are dropped; sections that hold no
    text are dropped, except that an empty prompt gives one empty section. Malformed prompts
    are read as A1111 reads them with a :class:`PromptSyntaxWarning`, or raise ``ValueError``
    with ``strict=True`` (see the module docstring).
    """
    return _sections([(t, w) for t, w, _ in _weighted_runs(prompt, strict, warn=True)])


def _weighted_runs(prompt: str, strict: bool, warn: bool) -> list[tuple[str, float, int]]:
    """``(text, weight, position)`` runs of ``prompt``; warns (or raises) as ``parse_prompt``."""
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a str, got {type(prompt).__name__}: {prompt!r:.80}")
    if not isinstance(strict, bool):
        raise TypeError(f"strict must be a bool, got {strict!r}")
    state = _Parse(prompt, strict)
    for m in _AND.finditer(prompt):
        state.problem(
            f"'AND' at position {m.start()} ({state.excerpt(m.start())}), A1111's composable "
            "diffusion, which clipguide does not implement",
            f"'AND' at position {m.start()} is A1111's composable diffusion, not implemented: "
            "read as the word 'AND'",
        )
    _other_syntax(state)
    i, n = 0, len(prompt)
    while i < n:
        c = prompt[i]
        if c == "\\" and i + 1 < n and prompt[i + 1] in _ESCAPABLE:
            state.buf.append(prompt[i + 1])
            i += 2
            continue
        if c in "([":
            state.flush(i + 1)
            state.groups.append(_Group(c, i, len(state.factors)))
            state.factors.append(ROUND_FACTOR if c == "(" else 1 / ROUND_FACTOR)
        elif c in ")]":
            _close(state, i)
        else:
            if c == "|" and state.groups and state.groups[-1].bracket == "[":
                if state.groups[-1].bar is None:
                    state.groups[-1].bar = i
            state.buf.append(c)
        i += 1
    if state.groups:
        last = state.groups[-1]
        state.problem(
            f"an unclosed {last.bracket!r} opened at position {last.start}: "
            f"{state.excerpt(last.start)}; close it or escape it as '\\{last.bracket}'",
            "unclosed "
            + ", ".join(f"{g.bracket!r} at position {g.start}" for g in state.groups)
            + " closed at the end",
        )
    state.flush(n)
    if warn and state.issues:
        _warn(prompt, state.issues)
    return _weights(state)


def _other_syntax(state: _Parse) -> None:
    """A1111's extra-network tags and compel's ``word++``/``word--``: read as text."""
    for m in _EXTRA_NETWORK.finditer(state.prompt):
        state.problem(
            f"{m.group()!r} at position {m.start()}, an A1111 extra-network tag: LoRAs are "
            "loaded into the pipeline (pipe.load_lora_weights; --lora on the command line)",
            f"{m.group()!r} at position {m.start()} is an A1111 LoRA tag, not applied: read as "
            "text (load LoRAs with pipe.load_lora_weights, or --lora)",
        )
    for m in _COMPEL.finditer(state.prompt):
        state.problem(
            f"{m.group()!r} at position {m.start()} ({state.excerpt(m.start())}), compel's "
            "weight syntax; write '(word:1.1)' instead",
            f"{m.group()!r} at position {m.start()} is compel's weight syntax, not clipguide's: "
            "read as text (write '(word:1.1)')",
        )


def _close(state: _Parse, i: int) -> None:
    """Handle the closing bracket at position ``i``."""
    prompt, c = state.prompt, state.prompt[i]
    opener = "(" if c == ")" else "["
    if state.strict and state.groups and state.groups[-1].bracket != opener:
        inner = state.groups[-1]
        raise ValueError(
            f"prompt has {c!r} at position {i} closing {inner.bracket!r} opened at position "
            f"{inner.start}: {state.excerpt(i)}"
        )
    same = [g for g in state.groups if g.bracket == opener]
    if not same:
        state.problem(
            f"an unexpected {c!r} at position {i}: {state.excerpt(i)}; escape it as "
            f"'\\{c}' for a literal bracket",
            f"{c!r} at position {i} closes nothing: read as a literal {c!r}",
        )
        state.buf.append(c)
        return
    group = same[-1]
    inner = state.groups[-1]
    if inner is not group:  # only when lenient: strict raised above
        state.issues.append(
            f"{c!r} at position {i} closes {opener!r} at position {group.start} across "
            f"{inner.bracket!r} at position {inner.start}"
        )
    colon, tail = _weight_tail(prompt, i)
    if opener == "(" and colon is not None:
        if _NUMBER.fullmatch(tail):
            state.factors[group.index] = _weight_value(state, tail, colon, i)
            del state.buf[len(state.buf) - (i - colon) :]
        elif state.strict:
            raise ValueError(
                f"prompt has a non-numeric weight {tail.strip()!r} at position {colon + 1}: "
                f"{state.excerpt(colon)}; write '(text:1.2)', or '\\:' for a literal colon"
            )
        elif _NUMBERISH.fullmatch(tail):
            state.issues.append(
                f"malformed weight {tail.strip()!r} at position {colon + 1}: ':' read as text"
            )
    elif opener == "[":
        if colon is not None and _NUMBER.fullmatch(tail):
            state.problem(
                f"a ':' weight inside square brackets at position {colon}: "
                f"{state.excerpt(colon)}; this is A1111 prompt editing, which clipguide does "
                "not implement; explicit weights go in round brackets, '(text:1.2)'",
                f"'[...:{tail.strip()}]' at position {group.start} is A1111 prompt editing, "
                "not implemented: read as text weighted 1/1.1",
            )
        elif colon is not None and state.strict:
            raise ValueError(
                f"prompt has a ':' inside square brackets at position {colon}: "
                f"{state.excerpt(colon)}; write '\\:' for a literal colon"
            )
        if group.bar is not None:
            state.problem(
                f"'|' at position {group.bar} inside '[' opened at position {group.start}: "
                f"{state.excerpt(group.bar)}; this is A1111 alternation, which clipguide does "
                "not implement",
                f"'[...|...]' at position {group.start} is A1111 alternation, not "
                "implemented: read as text weighted 1/1.1",
            )
    state.flush(i + 1)
    state.groups.remove(group)


def _weight_tail(prompt: str, close_at: int) -> tuple[int | None, str]:
    """Position of the group's last unescaped ':' before ``close_at`` and the text after it."""
    j = close_at - 1
    while j >= 0 and prompt[j] not in "()[]":
        if prompt[j] == ":" and not _escaped(prompt, j):
            return j, prompt[j + 1 : close_at]
        j -= 1
    return None, ""


def _weight_value(state: _Parse, tail: str, colon: int, close_at: int) -> float:
    value = float(tail)
    if not math.isfinite(value) or abs(value) > MAX_WEIGHT:
        raise ValueError(
            f"prompt has a weight {tail.strip()!r} at position {colon + 1} that is not a finite "
            f"float32 number (|weight| <= {MAX_WEIGHT:.3g}): {state.excerpt(colon)}"
        )
    return value


def _weights(state: _Parse) -> list[tuple[str, float, int]]:
    """Multiply each run's group factors; refuse products beyond float32's range."""
    out = []
    for text, groups, pos in state.runs:
        w = math.prod((state.factors[g] for g in groups), start=1.0)
        if not math.isfinite(w) or abs(w) > MAX_WEIGHT:
            raise ValueError(
                f"prompt has the span {text[:40]!r} at position {pos} whose weight, the product "
                f"of {len(groups)} nested group weights, is {w:.3g}: beyond float32's range "
                f"(|weight| <= {MAX_WEIGHT:.3g}); use fewer or smaller weights"
            )
        out.append((text, w, pos))
    return out


def _warn(prompt: str, issues: list[str]) -> None:
    listed = "; ".join(issues[:_MAX_LISTED])
    more = f"; and {len(issues) - _MAX_LISTED} more" if len(issues) > _MAX_LISTED else ""
    warnings.warn(
        f"prompt {_excerpt(prompt, 0, 60)} was read as A1111 reads it: {listed}{more}. "
        "Pass strict=True to raise instead.",
        PromptSyntaxWarning,
        stacklevel=_caller_level(),
    )


def _caller_level() -> int:
    """``stacklevel`` of the first frame outside clipguide (the user's call)."""
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_globals.get("__name__", "").startswith("clipguide."):
        frame, level = frame.f_back, level + 1
    return level


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


def plain_text(prompt: str, *, strict: bool = False, warn: bool = True) -> str:
    """The prompt without weight syntax (for encoders that take no weights, e.g. T5).

    ``warn=False`` skips the :class:`PromptSyntaxWarning` (for a prompt already parsed).
    """
    runs = _weighted_runs(prompt, strict, warn=warn)
    sections = _sections([(t, w) for t, w, _ in runs])
    return " ".join("".join(t for t, _ in sec).strip() for sec in sections).strip()


def weight_spans(prompt: str, weight: float) -> list[tuple[str, int]]:
    """``(text, position)`` of the runs of ``prompt`` whose weight rounds to ``weight`` in fp32."""
    target = torch.tensor(weight, dtype=torch.float32)
    runs = _weighted_runs(prompt, strict=False, warn=False)
    return [(t, p) for t, w, p in runs if torch.tensor(w, dtype=torch.float32) == target]
