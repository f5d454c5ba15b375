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
- a content sample: the first row and first column of every tensor of two or more dimensions
  and all of every smaller tensor, compared bit for bit. In-place writes through ``.data``
  (which bumps no version counter: PEFT's fusing, ``p.data.copy_(...)``, ``p.data[i] = ...``)
  are seen when they change a sampled element, which any dense change (a LoRA delta, a copied
  checkpoint, a scaled tensor) and any row write (an embedding row) does.

Not seen: a write through ``.data`` (or a numpy view, or any alias without a version counter)
that changes no sampled element, e.g. ``w.data[3, 7] = 0``; a change of behaviour outside the
module's own state (a patched ``forward``, a global module hook, ``config`` attributes such as
the attention implementation, which change results by float rounding only). After such edits
call ``TEXT_CACHE.clear()`` or pass ``cache=False``. A module whose tensors cannot be sampled
(quantised layouts) gets a fresh key on every call: it is never served from the cache.

Cost, measured on CPU (2 threads) for a text tower of bigG's size (1280 wide, 32 layers,
695 M parameters, fp32): about 20-30 ms per key against seconds for one encode; the key is
computed once per :func:`clipguide.encode_prompt` call and tower.

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
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

__all__ = [
    "TextEncodingCache",
    "TEXT_CACHE",
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

_counter = itertools.count()
_state_lock = threading.Lock()
_OPAQUE = object()  # stands for a value model_key does not compare (a tensor, a function...)
_BITS = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


@dataclass
class _Record:
    refs: list[weakref.ref]
    signature: tuple
    sample: tuple[bytes, tuple[torch.Tensor, ...]]
    generation: int


_records: weakref.WeakKeyDictionary[torch.nn.Module, _Record] = weakref.WeakKeyDictionary()


def model_key(module: torch.nn.Module) -> tuple:
    """Key of a module's current state: ``(generation, dtype, device)``.

    The generation changes whenever anything the module docstring lists differs from the last
    call for this module, so a key never names two different states.
    """
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    try:
        objects, signature, tensors = _describe(module)
    except (RuntimeError, TypeError, NotImplementedError):  # tensors without plain storage
        return (next(_counter), "unknown", "unknown")  # never matches: never cached
    sample = _sample(tensors)
    first = tensors[0] if tensors else torch.empty(0)
    with _state_lock:
        record = _records.get(module)
        if (
            sample is None
            or record is None
            or record.signature != signature
            or len(record.refs) != len(objects)
            or any(r() is not o for r, o in zip(record.refs, objects, strict=True))
            or not _same(record.sample, sample)
        ):
            record = _Record([weakref.ref(o) for o in objects], signature, sample or (b"", ()), 0)
            record.generation = next(_counter)
            _records[module] = record
        generation = record.generation
    return (generation, str(first.dtype), str(first.device))


def _describe(module: torch.nn.Module) -> tuple[list[Any], tuple, list[torch.Tensor]]:
    """Objects to compare by identity, a comparable signature, and the module's tensors."""
    objects: list[Any] = []
    signature: list[Any] = []
    for name, sub in module.named_modules(remove_duplicate=False):
        objects.append(sub)
        signature.append((name, tuple(_plain_state(sub))))
    tensors = [t for _, t in module.named_parameters(remove_duplicate=False)]
    tensors += [t for _, t in module.named_buffers(remove_duplicate=False)]
    for t in tensors:
        objects += [t, t.untyped_storage()]
        signature.append((t._version, t.dtype, t.device, t.shape, t.stride(), t.storage_offset()))
    return objects, tuple(signature), tensors


# transformers 5 adds forward hooks on a model's first forward that only record hidden states
# (they return None), and a flag saying so: not a change of the encoder's results.
_OBSERVER_MODULES = ("transformers.utils.output_capturing",)
_IGNORED_ATTRS = ("_output_capturing_hooks_installed",)


def _plain_state(module: torch.nn.Module) -> list[tuple[str, Any]]:
    """The module's plain attributes; dicts of other things (hooks, children) by their keys."""
    out = []
    for name, value in module.__dict__.items():
        if name in _IGNORED_ATTRS:
            continue
        if isinstance(value, dict) and "hook" in name:
            keys = (k for k, h in value.items() if _hook_module(h) not in _OBSERVER_MODULES)
            out.append((name, tuple(keys)))
        elif isinstance(value, dict):
            out.append((name, tuple((k, _leaf(v)) for k, v in value.items())))
        elif isinstance(value, (list, tuple, set, frozenset)):
            items = sorted(value, key=repr) if isinstance(value, (set, frozenset)) else value
            out.append((name, tuple(_leaf(v) for v in items)))
        else:
            out.append((name, _leaf(value)))
    return out


def _hook_module(hook: Any) -> str | None:
    hook = hook[0] if isinstance(hook, tuple) and hook else hook  # some dicts hold tuples
    return getattr(getattr(hook, "__func__", hook), "__module__", None)


def _leaf(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return _OPAQUE


Sample = tuple[bytes, tuple[torch.Tensor, ...]]


def _sample(tensors: list[torch.Tensor]) -> Sample | None:
    """Bit patterns of each tensor's first row and column (all of it below 2-D): bytes for CPU
    tensors, one tensor per device and element size otherwise; None if a tensor cannot be read
    that way."""
    host: list[bytes] = []
    groups: dict[tuple[str, int], list[torch.Tensor]] = {}
    try:
        for t in tensors:
            if t.numel() == 0:
                continue
            if t.is_meta or t.is_quantized or t.element_size() not in _BITS:
                return None
            data = t.detach()
            if data.dtype == torch.bool:
                data = data.to(torch.uint8)
            parts = [data.reshape(-1)]
            if data.ndim >= 2:
                rows = data if data.ndim == 2 else data.reshape(data.shape[0], -1)
                parts = [rows[:, 0], rows[0, 1:]]
            for part in parts:
                bits = part.view(_BITS[part.element_size()])
                if bits.device.type == "cpu":  # numpy: no thread pool, ~10x faster than cat
                    host.append(bits.numpy().tobytes())
                else:
                    groups.setdefault((str(bits.device), bits.element_size()), []).append(bits)
    except (RuntimeError, TypeError, NotImplementedError):
        return None
    return b"".join(host), tuple(torch.cat(groups[k]) for k in sorted(groups))


def _same(old: Sample, new: Sample) -> bool:
    return (
        old[0] == new[0]
        and len(old[1]) == len(new[1])
        and all(
            a.shape == b.shape and a.device == b.device and torch.equal(a, b)
            for a, b in zip(old[1], new[1], strict=True)
        )
    )


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
    if not isinstance(ids, torch.Tensor) or ids.ndim != 2 or ids.is_floating_point():
        shape = tuple(ids.shape) if isinstance(ids, torch.Tensor) else type(ids).__name__
        raise ValueError(f"ids must be an (N, L) tensor of token ids, got {shape}")
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
