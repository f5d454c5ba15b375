"""The plain prompt that travels with prompt embeddings, outside the pipeline's arguments.

``pipe(**cond)`` hands the pipeline tensors only, so a :class:`~.encode.Conditioning`'s text
cannot ride along as a keyword. Instead, the Conditioning records its plain prompt against
its ``prompt_embeds`` tensor (by identity, without keeping the tensor alive), and whoever
sees that tensor again (the guidance hook wrapping ``encode_prompt``, ``best_of_n``) looks
the text up with :func:`prompt_of`.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

__all__ = ["remember_prompt", "prompt_of"]

_lock = threading.Lock()
_prompts: dict[int, tuple[weakref.ref, tuple[str, ...]]] = {}


def _forget(key: int) -> None:
    with _lock:
        _prompts.pop(key, None)


def remember_prompt(embeds: Any, prompts: tuple[str, ...]) -> None:
    """Record ``prompts`` (one per row) as the text of the tensor ``embeds``."""
    key = id(embeds)
    with _lock:
        known = _prompts.get(key)
        _prompts[key] = (weakref.ref(embeds), tuple(prompts))
    if known is None or known[0]() is not embeds:
        weakref.finalize(embeds, _forget, key)


def prompt_of(embeds: Any) -> tuple[str, ...] | None:
    """The plain prompts recorded for ``embeds`` (one per row), or None."""
    if embeds is None:
        return None
    with _lock:
        found = _prompts.get(id(embeds))
    if found is None or found[0]() is not embeds:
        return None
    return found[1]
