"""The micro world registers its models with clipguide as any third party would.

Declared as the ``shapes`` entry point of the ``clipguide.sources`` group (pyproject.toml), so
``load_clip("shapes")`` works without importing this package first: the registry calls
:func:`register` the first time a name is not found.
"""

from __future__ import annotations

import json
from functools import lru_cache, partial
from pathlib import Path
from typing import Any

from clipguide.model.checkpoints import WeightsNotFoundError
from clipguide.model.convert import text_config_from_openclip
from clipguide.model.openclip import load_openclip_folder
from clipguide.model.registry import LoadRequest, register_source, register_vision_pairing

__all__ = ["CLIP_NAMES", "WEIGHTS_DIR", "register", "is_shapes_text_tower"]

WEIGHTS_DIR = Path(__file__).parent / "weights"
CLIP_NAMES = ("shapes", "shapes-judge")
# what makes two CLIP text towers the same architecture (not their weights' values)
_ARCHITECTURE = (
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "max_position_embeddings",
    "projection_dim",
    "hidden_act",
)


def _load(name: str, request: LoadRequest) -> Any:
    folder = WEIGHTS_DIR / name
    if not folder.is_dir():
        raise WeightsNotFoundError(
            f"the shipped micro-world model {name!r} is missing at {folder}; reinstall "
            "clipguide or retrain it with `python -m clipguide.shapes.training clip|judge`"
        )
    return load_openclip_folder(folder, request, name)


@lru_cache(maxsize=1)
def _shapes_text_architecture() -> tuple:
    """The architecture of the shipped guide CLIP's text tower, read from its config."""
    config = json.loads((WEIGHTS_DIR / "shapes" / "open_clip_config.json").read_text())
    text = text_config_from_openclip(config["model_cfg"])
    return tuple(getattr(text, key) for key in _ARCHITECTURE)


def is_shapes_text_tower(text_model: Any) -> bool:
    """Whether a pipeline's text tower has the shipped guide CLIP's text architecture: the
    micro-world pipeline carries that tower as ``text_encoder_2``, so its vision tower pairs."""
    config = getattr(text_model, "config", None)
    if config is None:
        return False
    try:
        shipped = _shapes_text_architecture()
    except (OSError, ValueError, KeyError):  # weights missing or unreadable: pairs with nothing
        return False
    return tuple(getattr(config, key, None) for key in _ARCHITECTURE) == shipped


def register() -> None:
    """Register ``"shapes"``, ``"shapes-judge"`` and the shapes vision pairing."""
    for name in CLIP_NAMES:
        register_source(name, partial(_load, name))
    register_vision_pairing(is_shapes_text_tower, "shapes")
