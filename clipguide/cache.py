"""A bounded LRU cache of text-tower outputs, shared by conditioning, guidance and scoring.

Entries are keyed by (model identity, layer choice, token ids of one sequence). Model identity
is the text module object (held weakly) plus its dtype, device and the sum of its parameters'
in-place version counters, so loading new weights or a training step invalidates old entries
without any bookkeeping by the caller.

Use it through:

- :func:`cached_text_embeds` ``(clip, prompts) -> (B, D)`` fp32 L2-normalised embeddings
  (scoring, guidance targets); entries hold only the pooled vector;
- :func:`cached_encode_text` ``(clip, prompts | ids, hidden_layer=-2) -> TextEncoding``
  (hidden states too);
- :func:`encode_token_rows` for transformers text encoders directly (what
  :func:`clipguide.encode_prompt` uses for pipelines).

Every function takes ``cache=True`` (the shared :data:`TEXT_CACHE`), ``False`` (no caching)
or a :class:`TextEncodingCache` of your own. Encoding runs under ``torch.no_grad``.
"""

from __future__ import annotations

import itertools
import threading
import weakref
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

__all__ = [
    "TextEncodingCache",
    "TEXT_CACHE",
    "model_key",
    "encode_token_rows",
    "cached_encode_text",
    "cached_text_embeds",
]

Entry = dict[str, torch.Tensor]


class TextEncodingCache:
    """Thread-safe LRU of per-sequence text encodings, bounded by entry count and bytes."""

    def __init__(self, max_entries: int = 4096, max_bytes: int = 512 * 2**20) -> None:
        for name, value in (("max_entries", max_entries), ("max_bytes", max_bytes)):
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an int >= 0, got {value!r}")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._data: OrderedDict[Hashable, Entry] = OrderedDict()
        self._lock = threading.Lock()
        self.nbytes = 0
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return (
            f"TextEncodingCache(entries={len(self)}/{self.max_entries}, "
            f"MiB={self.nbytes / 2**20:.1f}/{self.max_bytes / 2**20:.0f}, "
            f"hits={self.hits}, misses={self.misses})"
        )

    def get(self, key: Hashable) -> Entry | None:
        """The entry for ``key`` (marked most recently used), or None."""
        with self._lock:
            entry = self._data.get(key)
            if entry is None:
                self.misses += 1
                return None
            self._data.move_to_end(key)
            self.hits += 1
            return entry

    def put(self, key: Hashable, entry: Entry) -> None:
        """Store ``entry`` (tensors are detached and copied), evicting least recently used."""
        entry = {k: v.detach().clone() for k, v in entry.items()}
        size = sum(v.numel() * v.element_size() for v in entry.values())
        if size > self.max_bytes or self.max_entries == 0:
            return
        with self._lock:
            old = self._data.pop(key, None)
            if old is not None:
                self.nbytes -= _nbytes(old)
            self._data[key] = entry
            self.nbytes += size
            while len(self._data) > self.max_entries or self.nbytes > self.max_bytes:
                _, dropped = self._data.popitem(last=False)
                self.nbytes -= _nbytes(dropped)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self.nbytes = self.hits = self.misses = 0


def _nbytes(entry: Entry) -> int:
    return sum(v.numel() * v.element_size() for v in entry.values())


TEXT_CACHE = TextEncodingCache()
"""The process-wide cache used when ``cache=True``."""

_serials: weakref.WeakKeyDictionary[torch.nn.Module, int] = weakref.WeakKeyDictionary()
_counter = itertools.count()
_serial_lock = threading.Lock()


def model_key(module: torch.nn.Module) -> tuple:
    """Identity of a module's current weights: object serial, dtype, device, version sum."""
    with _serial_lock:
        serial = _serials.get(module)
        if serial is None:
            serial = _serials[module] = next(_counter)
    tensors = list(module.parameters()) + list(module.buffers())
    first = tensors[0] if tensors else torch.empty(0)
    version = sum(t._version for t in tensors)
    return (serial, str(first.dtype), str(first.device), version)


def _resolve(cache: TextEncodingCache | bool) -> TextEncodingCache | None:
    if cache is True:
        return TEXT_CACHE
    if cache is False or cache is None:
        return None
    if isinstance(cache, TextEncodingCache):
        return cache
    raise TypeError(f"cache must be True, False or a TextEncodingCache, got {cache!r}")


def _run_encoder(
    encoder: torch.nn.Module, ids: torch.Tensor, layer: int | None, final_norm: bool
) -> list[Entry]:
    device = next(encoder.parameters()).device
    with torch.no_grad():
        out = encoder(input_ids=ids.to(device), output_hidden_states=layer is not None)
    pooled = getattr(out, "text_embeds", None)
    if pooled is None:
        pooled = getattr(out, "pooler_output", None)
    hidden = None
    if layer is not None:
        if final_norm and layer == -1:
            hidden = out.last_hidden_state
        else:
            hidden = out.hidden_states[layer]
            if final_norm:
                with torch.no_grad():
                    hidden = _final_layer_norm(encoder)(hidden)
    rows = []
    for i in range(ids.shape[0]):
        entry: Entry = {}
        if hidden is not None:
            entry["hidden"] = hidden[i]
        if pooled is not None:
            entry["pooled"] = pooled[i]
        rows.append(entry)
    return rows


def _final_layer_norm(encoder: torch.nn.Module) -> torch.nn.Module:
    """The final layer norm (transformers 5 flattens ``CLIPTextModel``; older nest it)."""
    norm = getattr(encoder, "final_layer_norm", None)
    return norm if norm is not None else encoder.text_model.final_layer_norm


def encode_token_rows(
    encoder: torch.nn.Module,
    ids: torch.Tensor,
    *,
    hidden_layer: int | None = -2,
    final_norm: bool = False,
    cache: TextEncodingCache | bool = True,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Hidden states ``(N, L, d)`` of ``hidden_layer`` and pooled ``(N, D)`` for token rows.

    ``encoder`` is a transformers CLIP text model (``text_embeds`` is the pooled output when it
    has a projection, else ``pooler_output``). ``hidden_layer=None`` computes and caches only
    the pooled output; ``final_norm`` applies the final layer norm to the hidden states (SD 1/2
    conventions). The rows run as one batch unless all are cached, so a cold call computes
    exactly what one forward of the same batch computes.
    """
    if ids.ndim != 2:
        raise ValueError(f"ids must be (N, L) token ids, got shape {tuple(ids.shape)}")
    store = _resolve(cache)
    if store is None:
        rows = _run_encoder(encoder, ids, hidden_layer, final_norm)
    else:
        base = (model_key(encoder), hidden_layer, final_norm)
        keys = [base + (tuple(row),) for row in ids.tolist()]
        found = [store.get(k) for k in keys]
        if all(e is not None for e in found):
            rows = found  # type: ignore[assignment]
        else:
            rows = _run_encoder(encoder, ids, hidden_layer, final_norm)
            for key, entry in zip(keys, rows, strict=True):
                store.put(key, entry)
                if hidden_layer is not None and "pooled" in entry:
                    # the pooled vector does not depend on the layer: serve similarity
                    # targets (scores, guidance) from conditioning encodes too
                    store.put((key[0], None, False, key[3]), {"pooled": entry["pooled"]})
    hidden = torch.stack([r["hidden"] for r in rows]) if hidden_layer is not None else None
    pooled = torch.stack([r["pooled"] for r in rows]) if rows and "pooled" in rows[0] else None
    return hidden, pooled


def _clip_parts(clip: Any) -> tuple[torch.nn.Module, Any]:
    text_model = getattr(clip, "text_model", None)
    if text_model is None or not callable(getattr(clip, "tokenize", None)):
        raise TypeError(
            f"clip must be a clipguide CLIP with a text tower (text_model and tokenize), "
            f"got {type(clip).__name__}"
        )
    return text_model, clip


def _ids(clip: Any, prompts: str | Sequence[str] | torch.Tensor) -> torch.Tensor:
    if isinstance(prompts, torch.Tensor):
        return prompts
    return clip.tokenize(prompts)


def cached_encode_text(
    clip: Any,
    prompts: str | Sequence[str] | torch.Tensor,
    *,
    hidden_layer: int = -2,
    cache: TextEncodingCache | bool = True,
) -> Any:
    """``clip.encode_text`` with a cache: a ``TextEncoding`` for prompts or token ids.

    Prompts are tokenized by ``clip.tokenize`` (truncated to the context keeping the end
    token, with a warning); use :func:`clipguide.encode_prompt` for long prompts.
    """
    from clipguide.clip import TextEncoding

    text_model, _ = _clip_parts(clip)
    hidden, pooled = encode_token_rows(
        text_model, _ids(clip, prompts), hidden_layer=hidden_layer, cache=cache
    )
    return TextEncoding(
        hidden_states=hidden, pooled=pooled, embeds=F.normalize(pooled.float(), dim=-1)
    )


def cached_text_embeds(
    clip: Any,
    prompts: str | Sequence[str] | torch.Tensor,
    *,
    cache: TextEncodingCache | bool = True,
) -> torch.Tensor:
    """fp32 L2-normalised text embeddings ``(B, D)`` (similarity targets), cached per prompt."""
    text_model, _ = _clip_parts(clip)
    _, pooled = encode_token_rows(text_model, _ids(clip, prompts), hidden_layer=None, cache=cache)
    return F.normalize(pooled.float(), dim=-1)
