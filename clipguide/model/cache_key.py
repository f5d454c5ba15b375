"""The state key of a text module: what :mod:`clipguide.model.text_cache` keys its entries on.

:func:`model_key` returns a generation number that changes whenever anything the
:mod:`clipguide.model.text_cache` docstring lists differs from the last call for the same module.

Taking a key walks every submodule and tensor (15 ms in fp32 on a bigG-sized text tower), so a
caller that encodes several times while nothing can change the weights (one selection, one
scoring job, one sampling run) holds its keys: inside ``with hold_keys(held):`` each module's
key is taken once and reused, outside keys are taken on every call as before.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import weakref
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["HeldKeys", "hold_keys", "model_key"]

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


class HeldKeys:
    """Keys taken once per module and reused while held (see :func:`hold_keys`).

    Whoever holds one promises that nothing changes the weights, adapters, hooks or dtype of
    the modules keyed under it for as long as it is held: a ``CLIPGuidance`` for one sampling
    run, a ``CLIPScorer`` for one ``select`` (or, made with ``hold_keys=True``, for its life:
    a scoring job). A key held past such a change would serve the old encodings.
    """

    def __init__(self) -> None:
        self._keys: weakref.WeakKeyDictionary[torch.nn.Module, tuple] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()
        self.taken = 0  # keys computed under this holder

    def __repr__(self) -> str:
        return f"HeldKeys(modules={len(self._keys)}, taken={self.taken})"

    def key(self, module: torch.nn.Module) -> tuple:
        """The held key of ``module``, taken now if it has none yet."""
        with self._lock:
            key = self._keys.get(module)
        if key is None:
            key = _take_key(module)
            with self._lock:
                key = self._keys.setdefault(module, key)
                self.taken += 1
        return key


_HELD: ContextVar[HeldKeys | None] = ContextVar("clipguide_held_keys", default=None)


@contextlib.contextmanager
def hold_keys(held: HeldKeys | None = None) -> Iterator[HeldKeys]:
    """Inside, :func:`model_key` takes each module's key once and reuses it (this thread).

    Args:
        held: the holder to use (to hold keys across several scopes: a scoring job's
            batches); default: the enclosing scope's, else a new one for this scope.

    Nothing inside may change the keyed modules (see :class:`HeldKeys`).
    """
    if held is not None and not isinstance(held, HeldKeys):
        raise TypeError(f"held must be a HeldKeys or None, got {type(held).__name__}")
    held = held or _HELD.get() or HeldKeys()
    token = _HELD.set(held)
    try:
        yield held
    finally:
        _HELD.reset(token)


def model_key(module: torch.nn.Module) -> tuple:
    """Key of a module's current state: ``(generation, dtype, device)``.

    The generation changes whenever anything the module docstring lists differs from the last
    call for this module, so a key never names two different states. Inside
    :func:`hold_keys`, the key taken first in the scope is returned.
    """
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    held = _HELD.get()
    return held.key(module) if held is not None else _take_key(module)


def _take_key(module: torch.nn.Module) -> tuple:
    """The key of the module's state now (see :func:`model_key`)."""
    try:
        objects, signature, tensors = _describe(module)
    except (RuntimeError, TypeError, NotImplementedError):  # tensors without plain storage
        return (next(_counter), "unknown", "unknown")  # never matches: never cached
    sample = _sample(tensors)
    floats = [t for t, _ in tensors if t.is_floating_point()]
    first = floats[0] if floats else torch.empty(0)
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


def _describe(
    module: torch.nn.Module,
) -> tuple[list[Any], tuple, list[tuple[torch.Tensor, bool]]]:
    """Objects to compare by identity, a comparable signature, and the module's tensors (each
    with whether its rows are looked up one by one: an embedding table)."""
    objects: list[Any] = []
    signature: list[Any] = []
    tensors: list[tuple[torch.Tensor, bool]] = []
    for name, sub in module.named_modules(remove_duplicate=False):
        objects.append(sub)
        signature.append(name)
        signature += _plain_state(sub)
        rows = isinstance(sub, torch.nn.Embedding)
        for table in (sub._parameters, sub._buffers):
            for key, t in table.items():
                if t is None:
                    signature.append((key, None))
                    continue
                tensors.append((t, rows))
                objects += (t, t.untyped_storage())
                signature.append(
                    (key, t._version, t.dtype, t.device, t.shape, t.stride(), t.storage_offset())
                )
    return objects, tuple(signature), tensors


# nn.Module bookkeeping that cannot change a forward pass, or is compared elsewhere (tensors
# and children by identity); transformers 5's flag for its output-recording hooks.
_SKIPPED = frozenset(
    {
        "_parameters",
        "_buffers",
        "_modules",
        "_non_persistent_buffers_set",
        "_backward_pre_hooks",
        "_backward_hooks",
        "_is_full_backward_hook",
        "_forward_hooks_with_kwargs",  # keys repeat those of the hook dicts
        "_forward_hooks_always_called",
        "_forward_pre_hooks_with_kwargs",
        "_state_dict_hooks",
        "_state_dict_pre_hooks",
        "_load_state_dict_pre_hooks",
        "_load_state_dict_post_hooks",
        "_output_capturing_hooks_installed",
    }
)
_HOOKS = frozenset({"_forward_hooks", "_forward_pre_hooks"})
# transformers 5 adds forward hooks on a model's first forward that only record hidden states
# (they return None): not a change of the encoder's results.
_OBSERVER_MODULES = ("transformers.utils.output_capturing",)
_SCALARS = (bool, int, float, str, type(None))


def _plain_state(module: torch.nn.Module) -> list[tuple[str, Any]]:
    """The module's plain attributes (dicts and lists of plain values too) and forward hooks."""
    out = []
    for name, value in module.__dict__.items():
        if name in _SKIPPED:
            continue
        if name in _HOOKS:
            keys = tuple(k for k, h in value.items() if _hook_module(h) not in _OBSERVER_MODULES)
            if keys:
                out.append((name, keys))
        elif isinstance(value, _SCALARS):
            out.append((name, value))
        elif isinstance(value, dict):
            out.append((name, tuple((k, _leaf(v)) for k, v in value.items())))
        elif isinstance(value, (list, tuple)):
            out.append((name, tuple(_leaf(v) for v in value)))
        elif isinstance(value, (set, frozenset)):
            out.append((name, tuple(sorted(_leaf(v) for v in value if isinstance(v, str)))))
        else:
            out.append((name, _OPAQUE))
    return out


def _hook_module(hook: Any) -> str | None:
    hook = hook[0] if isinstance(hook, tuple) and hook else hook  # some dicts hold tuples
    return getattr(getattr(hook, "__func__", hook), "__module__", None)


def _leaf(value: Any) -> Any:
    return value if isinstance(value, _SCALARS) else _OPAQUE


Sample = tuple[bytes, tuple[torch.Tensor, ...]]


def _sample(tensors: list[tuple[torch.Tensor, bool]]) -> Sample | None:
    """Bit patterns of each tensor's first and last rows (and first column for embedding
    tables; all of it below 2-D): bytes for CPU tensors, one tensor per device and element size
    otherwise; None if a tensor cannot be read that way."""
    host: list[bytes] = []
    groups: dict[tuple[str, int], list[torch.Tensor]] = {}
    try:
        for t, by_row in tensors:
            if t.numel() == 0:
                continue
            if t.is_meta or t.is_quantized or t.element_size() not in _BITS:
                return None
            data = t.detach()
            if data.dtype == torch.bool:
                data = data.to(torch.uint8)
            if data.ndim > 2:
                data = data.reshape(data.shape[0], -1)
            bits = data.view(_BITS[data.element_size()])
            if bits.ndim == 2:  # a column is one cache line per row: only for tables
                parts = [bits[0], bits[-1]] + ([bits[:, 0]] if by_row else [])
            else:
                parts = [bits.reshape(-1)]
            if bits.device.type == "cpu":  # numpy copies: no thread pool, ~10x faster than cat
                host += (part.numpy().tobytes() for part in parts)
            else:
                groups.setdefault((str(bits.device), bits.element_size()), []).extend(parts)
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
