"""A bounded LRU cache of text-tower outputs, shared by conditioning, guidance and scoring.

Entries are keyed by (weights state, layer choice, token ids of one sequence). The weights
state is :func:`model_key`: a generation number that changes whenever the text module's state
differs from the last time it was looked at. It compares, on every call:

- the identity (held weakly) of every submodule, parameter, buffer and parameter storage, so
  new or removed modules and parameters (LoRA/PEFT adapters loaded or unloaded, textual
  inversion resizing the embeddings), ``load_state_dict(..., assign=True)``, ``p.data = ...``
  and ``.to(dtype/device)`` are seen even where the allocator reuses an address;
- each tensor's in-place version counter, shape, strides, dtype and device, so optimiser
  steps, in-place edits under ``torch.no_grad()`` and ``load_state_dict`` (copying) are seen;
- the plain Python state of every submodule (numbers, strings, flags and lists/dicts of them,
  e.g. ``training``, PEFT's ``scaling``, ``merged_adapters``, ``active_adapters`` and
  ``disable_adapters``) and the keys of its forward hooks, so ``set_adapters`` scales,
  ``disable_lora``/``enable_lora``, ``fuse_lora``/``unfuse_lora`` and added hooks are seen;
- a content sample, compared bit for bit: the first and last rows of every tensor of two or
  more dimensions, the first column of every embedding table (one element per token row),
  and all of every smaller tensor (biases, norms). In-place writes through ``.data`` (which
  bump no version counter: PEFT's fusing, ``p.data.copy_(...)``, ``p.data[i] = ...``) are
  seen when they change a sampled element, which any dense change does (a LoRA delta, a
  copied checkpoint, a scaled tensor), and so does any write to an embedding row.

Not seen: a write through ``.data`` (or a numpy view, or any alias without a version counter)
that changes no sampled element, e.g. ``linear.weight.data[3, 7] = 0``; a change of behaviour
outside the module's own state (a patched ``forward``, a global module hook, ``config``
attributes such as the attention implementation, which change results by float rounding
only). After such edits call ``TEXT_CACHE.clear()`` or pass ``cache=False``. A module whose
tensors cannot be sampled (quantised layouts) gets a fresh key on every call: it is never
served from the cache.

Cost: the key walks every submodule and tensor in Python and reads the sample. Measured on
this project's CPU machine (2 shared cores, fp32) for a text tower of bigG's size (1280 wide,
32 layers, 695 M parameters, 393 modules, 517 tensors): 50-60 ms per key, against 7-17 s to
encode two prompts, so a hit costs well under 1% of an encode. It does not scale with the
batch, and most of it is Python, so on a GPU, where bigG encodes a short batch in
milliseconds, a key can cost about as much as the encode (not measured here): there, pass
``cache=False`` unless the same prompts recur. :func:`clipguide.encode_prompt` takes one key
per tower and call. Callers that encode several times while nothing changes the weights hold
their keys (:func:`hold_keys`): a ``CLIPScorer.select`` takes one key instead of two or three,
a guided sampling run one instead of one per guided evaluation, a scorer made with
``hold_keys=True`` (the command line's and each Ray actor's) one per job.

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

import threading
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from clipguide.model.cache_key import HeldKeys, hold_keys, model_key

__all__ = [
    "TextEncodingCache",
    "TEXT_CACHE",
    "HeldKeys",
    "hold_keys",
    "model_key",
    "resolve_cache",
    "encode_token_rows",
    "cached_encode_text",
    "cached_text_embeds",
]

Entry = dict[str, torch.Tensor]


class TextEncodingCache:
    """Thread-safe LRU of per-sequence text encodings, bounded by entry count and bytes."""

    def __init__(self, max_entries: int = 4096, max_bytes: int = 512 * 2**20) -> None:
        for name, value in (("max_entries", max_entries), ("max_bytes", max_bytes)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
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
        _check_key(key)
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
        _check_key(key)
        if not isinstance(entry, dict) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in entry.items()
        ):
            raise TypeError(f"entry must be a dict of str -> torch.Tensor, got {entry!r:.80}")
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


def _check_key(key: Any) -> None:
    try:
        hash(key)
    except TypeError:
        raise TypeError(f"key must be hashable, got {key!r:.80}") from None


def _nbytes(entry: Entry) -> int:
    return sum(v.numel() * v.element_size() for v in entry.values())


TEXT_CACHE = TextEncodingCache()
"""The process-wide cache used when ``cache=True``."""


def resolve_cache(cache: TextEncodingCache | bool | None) -> TextEncodingCache | None:
    """The cache a ``cache=`` argument names: True the shared one, False/None none."""
    if cache is True:
        return TEXT_CACHE
    if cache is False or cache is None:
        return None
    if isinstance(cache, TextEncodingCache):
        return cache
    raise TypeError(f"cache must be True, False or a TextEncodingCache, got {cache!r:.80}")


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
    key: Hashable | None = None,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Hidden states ``(N, L, d)`` of ``hidden_layer`` and pooled ``(N, D)`` for token rows.

    ``encoder`` is a transformers CLIP text model (``text_embeds`` is the pooled output when it
    has a projection, else ``pooler_output``). ``hidden_layer=None`` computes and caches only
    the pooled output; ``final_norm`` applies the final layer norm to the hidden states (SD 1/2
    conventions). The rows run as one batch unless all are cached, so a cold call computes
    exactly what one forward of the same batch computes. ``key`` is a :func:`model_key` of
    ``encoder`` taken by the caller for several calls in a row (default: taken here).
    """
    _check_ids(encoder, ids)
    _check_layer(encoder, hidden_layer)
    store = resolve_cache(cache)
    if store is None:
        rows = _run_encoder(encoder, ids, hidden_layer, final_norm)
    else:
        base = (key if key is not None else model_key(encoder), hidden_layer, final_norm)
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


def _check_ids(encoder: torch.nn.Module, ids: Any) -> None:
    """Token ids the encoder can take: (N >= 1, L) integers within its vocabulary and context."""
    if (
        not isinstance(ids, torch.Tensor)
        or ids.ndim != 2
        or ids.shape[0] == 0
        or ids.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)
    ):
        got = (
            f"a {ids.dtype} tensor of shape {tuple(ids.shape)}"
            if isinstance(ids, torch.Tensor)
            else f"{type(ids).__name__} {ids!r:.60}"
        )
        raise ValueError(f"ids must be an (N, L) integer tensor of token ids, N >= 1, got {got}")
    config = getattr(encoder, "config", None)
    context = getattr(config, "max_position_embeddings", None)
    if isinstance(context, int) and ids.shape[1] > context:
        raise ValueError(
            f"ids has {ids.shape[1]} tokens per row; the text model takes at most {context} "
            "(max_position_embeddings): use clipguide.encode_prompt for long prompts"
        )
    table = encoder.get_input_embeddings() if hasattr(encoder, "get_input_embeddings") else None
    vocab = getattr(table, "num_embeddings", getattr(config, "vocab_size", None))
    low, high = int(ids.min()), int(ids.max())
    if isinstance(vocab, int) and (low < 0 or high >= vocab):
        raise ValueError(f"ids must be token ids in [0, {vocab}), got values {low} to {high}")


def _check_layer(encoder: torch.nn.Module, layer: Any) -> None:
    if layer is None:
        return
    n = getattr(getattr(encoder, "config", None), "num_hidden_layers", None)
    if (
        isinstance(layer, bool)
        or not isinstance(layer, int)
        or (isinstance(n, int) and not -(n + 1) <= layer <= n)
    ):
        span = f"[{-(n + 1)}, {n}]" if isinstance(n, int) else "the model's layers"
        raise ValueError(f"hidden_layer must be None or an int in {span}, got {layer!r}")


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
        if prompts.ndim != 2 or prompts.is_floating_point() or prompts.is_complex():
            raise ValueError(
                "prompts given as a tensor must be (N, L) integer token ids, got a "
                f"{prompts.dtype} tensor of shape {tuple(prompts.shape)}"
            )
        return prompts
    if isinstance(prompts, str) or (
        isinstance(prompts, Sequence) and prompts and all(isinstance(p, str) for p in prompts)
    ):
        return clip.tokenize(prompts)
    raise TypeError(
        "prompts must be a str, a non-empty list of str or an (N, L) tensor of token ids, "
        f"got {prompts!r:.80}"
    )


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
    from clipguide.model.clip import TextEncoding

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
