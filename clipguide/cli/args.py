"""The command line's error type, and the argument types and checks shared by the
subcommands, all cheap: they run before any model loads. Each error names what it accepts;
argparse adds the option's name and the value."""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

__all__ = [
    "CLIError",
    "DEFAULT_PIPELINE",
    "MAX_SCALE",
    "MAX_SEED",
    "MAX_SIZE",
    "positive_int",
    "non_negative_float",
    "seed_arg",
    "scale_arg",
    "size_arg",
    "device_arg",
    "check_writable_file",
    "check_output_folder",
    "check_model",
]

DEFAULT_PIPELINE = "shapes"  # the micro world, registered by name (clipguide.cli.models)
MAX_SEED = 2**64 - 1  # torch generators take seeds in [0, 2**64)
MAX_SIZE = 4096
MAX_SCALE = 100.0  # --cfg and --clip-guidance: beyond this, only overflow


class CLIError(Exception):
    """A user-facing error: printed as ``clipguide CMD: message``; ``code`` is the exit status."""

    def __init__(self, message: str, code: int = 2, prog: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.prog = prog


def positive_int(value: str) -> int:
    """An integer >= 1."""
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}")
    return number


def _finite(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {value!r}") from None
    if not math.isfinite(number):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {value!r}")
    return number


def non_negative_float(value: str) -> float:
    """A finite number >= 0 (no NaN, no infinity)."""
    number = _finite(value)
    if number < 0:
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {value!r}")
    return number


def device_arg(value: str) -> str:
    """A torch device that exists on this machine (``cpu``, ``cuda``, ``cuda:1``, ``mps``)."""
    from clipguide.model.devices import check_device

    try:
        return str(check_device(value))
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err).removeprefix("device=")) from None


def check_writable_file(path: Path, option: str) -> None:
    """Refuse, before any work, an output path that cannot become a file.

    ``path`` must not be a folder, and its nearest existing ancestor must be a writable folder
    (missing folders in between are created when the file is written).
    """
    if path.is_dir():
        raise CLIError(f"{option} {str(path)!r} is a folder; expected a file name")
    _check_creatable_folder(path.parent, option, path)


def _check_creatable_folder(folder: Path, option: str, shown: Path) -> None:
    """``folder`` exists as a writable folder or can be created as one."""
    probe = folder if str(folder) else Path(".")
    while not probe.exists():
        if probe.is_symlink():  # a dangling link
            raise CLIError(f"{option} {str(shown)!r}: {str(probe)!r} is a broken symbolic link")
        probe = probe.parent
    if not probe.is_dir():
        raise CLIError(
            f"{option} {str(shown)!r}: {str(probe)!r} is a file, so no folder can be made there"
        )
    if not os.access(probe, os.W_OK | os.X_OK):
        raise CLIError(f"{option} {str(shown)!r}: folder {str(probe)!r} is not writable")


def check_output_folder(folder: Path, option: str) -> None:
    """Refuse, before any work, an output folder that is a file or cannot be created."""
    if folder.exists() and not folder.is_dir():
        raise CLIError(f"{option} {str(folder)!r} is a file; expected a folder")
    _check_creatable_folder(folder, option, folder)


def seed_arg(value: str) -> int:
    """A seed in [0, 2**64)."""
    try:
        seed = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer seed, got {value!r}") from None
    if not 0 <= seed <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"expected a seed in 0..2**64-1, got {value!r}")
    return seed


def scale_arg(value: str) -> float:
    """A guidance scale: finite, in [0, MAX_SCALE]."""
    scale = non_negative_float(value)
    if scale > MAX_SCALE:
        raise argparse.ArgumentTypeError(
            f"expected a number in 0..{MAX_SCALE:g} (larger only overflows), got {value!r}"
        )
    return scale


def size_arg(value: str) -> int:
    """An image side: a multiple of 8 in [8, MAX_SIZE] (what SDXL-style pipelines accept)."""
    try:
        size = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a whole number of pixels, got {value!r}"
        ) from None
    if not (8 <= size <= MAX_SIZE and size % 8 == 0):
        raise argparse.ArgumentTypeError(
            f"expected a multiple of 8 from 8 to {MAX_SIZE} pixels, got {value!r}"
        )
    return size


def offline() -> bool:
    """HF_HUB_OFFLINE is set: nothing can be downloaded."""
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on")


def check_model(model: str) -> None:
    """Refuse a ``--model`` that cannot be a diffusers pipeline, before loading anything."""
    from clipguide.cli.models import named_model

    if named_model(model) is not None:
        return
    accepted = (
        f"accepted: a registered name such as {DEFAULT_PIPELINE!r} (the micro world), a folder holding a diffusers pipeline "
        "(model_index.json), a single-file checkpoint (.safetensors, .ckpt) or a Hugging Face "
        "repo id such as "
        "'stabilityai/stable-diffusion-xl-base-1.0'"
    )
    path = Path(model).expanduser()
    if path.is_file() and path.suffix.lower() in (".safetensors", ".ckpt"):
        return  # a single-file checkpoint
    if path.exists():
        if not (path / "model_index.json").is_file():
            raise CLIError(f"--model {model!r} has no model_index.json; {accepted}")
        return
    parts = model.split("/")
    if len(parts) != 2 or not all(parts) or model.startswith((".", "~")):
        raise CLIError(f"--model {model!r} is not an existing folder nor a repo id; {accepted}")
    if offline():
        from huggingface_hub import try_to_load_from_cache

        if not isinstance(try_to_load_from_cache(model, "model_index.json"), str):
            raise CLIError(
                f"--model {model!r} is not in the local Hugging Face cache and cannot be "
                "downloaded (HF_HUB_OFFLINE is set); download it where the hub is reachable "
                f"(`hf download {model}`) and pass its folder, or use --model {DEFAULT_PIPELINE}"
            )
