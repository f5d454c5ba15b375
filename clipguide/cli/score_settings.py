"""What decides a score row besides its image and prompt: the judge (model, weights,
precision), the scale and, for ``clipguide score``, the columns (``--robust``).

Both engines record these settings beside their output (``OUT.job.json`` for a file,
``_job.json`` in a Ray engine's folder) and a resume with other settings is refused, naming
the first setting that differs with its old and new value: rows of two judges or two scales
(68.85 beside 1.76) are never mixed in one output.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from clipguide.model.defaults import DEFAULT_MODEL, DEFAULT_PRETRAINED

__all__ = [
    "judge_settings",
    "changed_setting",
    "as_option",
    "as_argument",
    "settings_file",
    "read_settings",
]

_FLAGS = {"model": "--model", "pretrained": "--pretrained", "dtype": "--dtype"}
_SWITCHES = {"robust": "--robust"}


def judge_settings(
    model: str | None, pretrained: str | None, dtype: str | None, scale: float, **more: Any
) -> dict[str, Any]:
    """The settings that decide a row's numbers; the default judge named or left out is one.

    Args:
        model, pretrained, dtype: as ``load_clip`` takes them (None: its default).
        scale: the CLIPScore scale (100, or 2.5 with ``--hessel``).
        more: further settings that change rows (``robust=True``: more columns).
    """
    model = model or DEFAULT_MODEL
    if pretrained is None and model == DEFAULT_MODEL:
        pretrained = DEFAULT_PRETRAINED
    return {"model": model, "pretrained": pretrained, "dtype": dtype, "scale": float(scale), **more}


def as_argument(name: str, value: Any) -> str:
    """A setting as the library's argument: ``model='shapes'``."""
    return f"{name}={value!r}"


def as_option(name: str, value: Any) -> str:
    """A setting as ``clipguide score``'s option: ``--model 'shapes'``, ``--hessel``."""
    if name == "scale":
        from clipguide.scoring.metrics import HESSEL_SCALE

        hessel = value == HESSEL_SCALE
        return f"{'' if hessel else 'no '}--hessel (scale {value:g})"
    if name in _SWITCHES:
        return f"{'' if value else 'no '}{_SWITCHES[name]}"
    if name in _FLAGS:
        return f"{_FLAGS[name]} {'left out' if value is None else repr(value)}"
    return as_argument(name, value)


def changed_setting(old: dict[str, Any], new: dict[str, Any], shown=as_argument) -> str | None:
    """``"OLD; this run: NEW"`` for the first setting that differs (``shown`` writes each
    side), or None when all agree. A setting the old job did not record reads as unknown."""
    for name, value in new.items():
        if name not in old:
            return f"an unrecorded {name}; this run: {shown(name, value)}"
        if old[name] != value:
            return f"{shown(name, old[name])}; this run: {shown(name, value)}"
    return None


def settings_file(out: Path) -> Path:
    """Where ``clipguide score`` records the settings of the rows in the file ``out``."""
    return out.with_name(out.name + ".job.json")


def read_settings(file: Path) -> dict[str, Any] | None:
    """The settings recorded in ``file`` (None if there is none); ValueError if unreadable."""
    if not file.exists():
        return None
    try:
        settings = json.loads(file.read_text(encoding="utf-8")).get("settings")
    except (OSError, ValueError, AttributeError) as err:
        raise ValueError(f"{file} cannot be read ({err})") from None
    if not isinstance(settings, dict):
        raise ValueError(f"{file} holds no settings")
    return settings
