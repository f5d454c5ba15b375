"""The sources registry behind :func:`clipguide.load_clip`: a table of resolvers, one per kind.

In the spirit of open_clip's config registry and pretrained table: each kind of source (a
registered name, ``hf-hub:``, ``local-dir:``, a folder, an open_clip name, a repo id, a
pipeline, a model object) is a small :class:`Resolver` that says whether it claims a source and
loads it. ``load_clip`` asks them in order and has no case of its own.

Third parties add names with :func:`register_source` (a loader taking the checked
:class:`LoadRequest`), whole kinds with :func:`register_resolver`, and the vision tower that a
pipeline's text tower pairs with through :func:`register_vision_pairing`. They may do it at
import, or declare a function in the ``clipguide.sources`` entry-point group of their package
(``[project.entry-points."clipguide.sources"]``): the registry calls those functions once, the
first time a name (or a pairing) is not found, so a plugin's names work without importing it
first. The micro world registers ``"shapes"`` and ``"shapes-judge"`` this way.
"""

from __future__ import annotations

import dataclasses
import threading
import warnings
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

__all__ = [
    "ENTRY_POINT_GROUP",
    "UNSET",
    "LoadRequest",
    "Resolver",
    "register_source",
    "register_resolver",
    "register_vision_pairing",
    "registered_sources",
    "resolve",
    "kinds",
    "paired_vision",
    "load_plugins",
]

ENTRY_POINT_GROUP = "clipguide.sources"


class _SourceDefault:
    """``pretrained`` not given: the source's own default weights (None means random ones)."""

    def __repr__(self) -> str:  # what help(load_clip) and inspect.signature show
        return "<the source's default>"

    def __reduce__(self) -> str:
        return "UNSET"  # pickles and copies as this one object, so ``is UNSET`` still holds


UNSET: Any = _SourceDefault()


@dataclasses.dataclass(frozen=True)
class LoadRequest:
    """What ``load_clip`` was asked for, already checked; every resolver receives it.

    ``dtype`` None means "as the source has it"; weights read from files use
    :attr:`file_dtype` (fp32 unless asked otherwise, as open_clip does).
    """

    towers: tuple[str, ...] = ("text", "vision")
    device: torch.device | None = None
    dtype: torch.dtype | None = None
    pretrained: Any = UNSET
    vision: Any = None
    cache_dir: str | None = None

    @property
    def file_dtype(self) -> torch.dtype:
        import torch

        return self.dtype or torch.float32

    def replace(self, **changes: Any) -> LoadRequest:
        return dataclasses.replace(self, **changes)


@dataclasses.dataclass(frozen=True)
class Resolver:
    """One kind of source: ``claims(source)`` says whether it is one, ``load`` loads it."""

    kind: str  # what it accepts, in words, for the error that lists every kind
    claims: Callable[[Any], bool]
    load: Callable[[Any, LoadRequest], Any]


_lock = threading.RLock()
_named: dict[str, Callable[[LoadRequest], Any]] = {}
_resolvers: list[Resolver] = []
_pairings: list[tuple[Callable[[Any], bool], Any]] = []
_plugins_loaded = False


def register_source(name: str, load: Callable[[LoadRequest], Any]) -> None:
    """Make ``load_clip(name)`` call ``load(request)``; a later registration of a name wins."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"name must be a non-empty str, got {name!r}")
    if not callable(load):
        raise TypeError(f"load must be a callable (LoadRequest -> CLIP), got {load!r:.80}")
    with _lock:
        _named[name] = load


def register_resolver(resolver: Resolver, *, first: bool = False) -> None:
    """Add a kind of source, asked after the others (``first``: before them)."""
    if not isinstance(resolver, Resolver):
        raise TypeError(f"resolver must be a clipguide Resolver, got {resolver!r:.80}")
    with _lock:
        _resolvers.insert(0 if first else len(_resolvers), resolver)


def register_vision_pairing(matches: Callable[[Any], bool], vision: Any) -> None:
    """``load_clip(pipe)`` without ``vision=`` loads ``vision`` (any source) as the vision tower
    when ``matches(text_tower)`` holds for the pipeline's text tower; the first match wins."""
    if not callable(matches):
        raise TypeError(f"matches must be a callable (text tower -> bool), got {matches!r:.80}")
    with _lock:
        if (matches, vision) not in _pairings:  # registering twice (import and plugin) is once
            _pairings.append((matches, vision))


def registered_sources() -> list[str]:
    """The names registered so far (plugins included once a lookup has loaded them)."""
    with _lock:
        return sorted(_named)


def load_plugins() -> None:
    """Call every ``clipguide.sources`` entry point once; a failing one is a warning."""
    global _plugins_loaded
    with _lock:
        if _plugins_loaded:
            return
        _plugins_loaded = True
        for point in entry_points(group=ENTRY_POINT_GROUP):
            try:
                point.load()()
            except Exception as err:  # noqa: BLE001 - one broken plugin must not stop loading
                warnings.warn(
                    f"the clipguide source plugin {point.name!r} ({point.value}) failed to "
                    f"register: {type(err).__name__}: {err}",
                    RuntimeWarning,
                    stacklevel=3,
                )


def _named_resolver() -> Resolver:
    return Resolver(
        "a registered name",
        lambda source: isinstance(source, str) and source in _named,
        lambda source, request: _named[source](request),
    )


def _resolve(source: Any, request: LoadRequest) -> Any:
    """Load ``source`` with the first resolver that claims it; None if none does.

    A string that is not a registered name loads the plugins first (once), so that their
    names take precedence over folders and hub ids, as built-in names do.
    """
    if isinstance(source, str) and source not in _named:
        load_plugins()
    with _lock:
        table = [_named_resolver(), *_resolvers]
    for resolver in table:
        if resolver.claims(source):
            return resolver.load(source, request)
    return None


def resolve(source: Any, request: LoadRequest) -> Any:
    """Load ``source`` with the first resolver that claims it; a clear error if none does."""
    if isinstance(source, Path):
        source = str(source)
    found = _resolve(source, request)
    if found is not None:
        return found
    if not isinstance(source, str):
        raise TypeError(
            f"source must be a model name, hf-hub:/local-dir: id, folder, repo id, open_clip "
            f"model, CLIP or diffusers pipeline; got {type(source).__name__}"
        )
    raise ValueError(
        f"source={source!r} is not a source load_clip knows. Accepted: {'; '.join(kinds())}. "
        f"Registered names: {registered_sources()}."
    )


def kinds() -> list[str]:
    """What the resolvers accept, in words, in the order they are asked."""
    with _lock:
        return [_named_resolver().kind, *(r.kind for r in _resolvers)]


def paired_vision(text_model: Any, default: Any) -> Any:
    """The vision source registered for a pipeline's text tower, else ``default``; a miss
    loads the plugins (once) and looks again."""
    for matches, vision in _pairings_now():
        if matches(text_model):
            return vision
    if not _plugins_loaded:
        load_plugins()
        return paired_vision(text_model, default)
    return default


def _pairings_now() -> list[tuple[Callable[[Any], bool], Any]]:
    with _lock:
        return list(_pairings)
