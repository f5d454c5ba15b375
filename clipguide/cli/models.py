"""Text-to-image models the command line knows by name, each with its own defaults.

``clipguide generate --model NAME`` looks ``NAME`` up here before reading it as a folder or a
Hugging Face repo id. Packages register models with :func:`register_model`, at import or from
their ``clipguide.sources`` entry point, which the registry calls the first time a name is not
found: the micro world registers ``"shapes"`` (the command line's default) this way.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from clipguide.model.registry import load_plugins

__all__ = ["NamedModel", "ANY_MODEL", "register_model", "named_model", "decoder_owner"]


@dataclass(frozen=True)
class NamedModel:
    """A model known by name, and what ``generate`` uses by default with it.

    Attributes:
        load: ``(device, scheduler name or None, progress) -> pipeline``.
        description: a few words for messages ("the micro world").
        steps, cfg: default sampling steps and classifier-free guidance scale.
        guide_clip: default ``--guide-clip`` (None: bigG).
        score_with: default ``--score-with`` CLIPs.
        decoders: extra ``--guide-decoder`` names: ``name -> (pipeline -> decoder)``.
        annotate: ``(images, prompt) -> one dict per image`` of extra sidecar fields.
        best_of: default ``--best-of``: candidates per written image, picked by the guide
            CLIP with ``--method`` (1: one plain sample, no guide CLIP loaded).
        layout: default ``--layout``: ``"auto"`` (layouts read from the prompt, where the
            policy uses them) or ``"none"``.
    """

    load: Callable[[Any, str | None, bool], Any] | None = None
    description: str = "a diffusers text-to-image pipeline"
    steps: int = 30
    cfg: float = 7.0
    guide_clip: str | None = None
    score_with: tuple[str, ...] = ()
    decoders: Mapping[str, Callable[[Any], Any]] = field(default_factory=dict)
    annotate: Callable[[list[Any], str], list[dict]] | None = None
    best_of: int = 1
    layout: str = "none"


ANY_MODEL = NamedModel()
"""The defaults for a model given as a folder or repo id."""

_lock = threading.Lock()
_models: dict[str, NamedModel] = {}


def register_model(name: str, model: NamedModel) -> None:
    """Make ``--model name`` mean ``model``; a later registration of a name wins."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"name must be a non-empty str, got {name!r}")
    if not isinstance(model, NamedModel) or not callable(model.load):
        raise TypeError(f"model must be a NamedModel with a load callable, got {model!r:.80}")
    with _lock:
        _models[name] = model


def named_model(name: str) -> NamedModel | None:
    """The model registered as ``name`` (plugins loaded on a miss), or None."""
    with _lock:
        found = _models.get(name)
    if found is None:
        load_plugins()
        with _lock:
            found = _models.get(name)
    return found


def decoder_owner(choice: str) -> tuple[str, NamedModel] | None:
    """The registered model that offers the ``--guide-decoder`` named ``choice``, if any."""
    load_plugins()
    with _lock:
        return next(((n, m) for n, m in _models.items() if choice in m.decoders), None)
