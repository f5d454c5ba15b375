"""Loading ``generate``'s pipeline: a registered name (the micro world), a diffusers folder or
repo id, or a single-file checkpoint (``.safetensors`` as A1111/ComfyUI keep them), with its
dtype, weight variant, sampler (Karras sigmas too) and LoRAs.

The argument types here are cheap (no torch): they run while the command line is parsed.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "DTYPES",
    "SINGLE_FILE_SUFFIXES",
    "PipelineOptions",
    "lora_arg",
    "is_single_file",
    "resolve_dtype",
    "load_pipeline",
]

DTYPES = ("auto", "fp16", "bf16", "fp32")
SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt")


@dataclass(frozen=True)
class PipelineOptions:
    """How ``--model`` is loaded (all optional; the defaults are the model's own)."""

    scheduler: str | None = None
    karras: bool = False
    dtype: str = "auto"
    variant: str | None = None
    config: str | None = None
    loras: tuple[tuple[str, float], ...] = ()
    progress: bool = True


def lora_arg(value: str) -> tuple[str, float]:
    """``PATH[:SCALE]``: a LoRA file or folder (or repo id) and its strength (default 1)."""
    path, scale = value, 1.0
    head, sep, tail = value.rpartition(":")
    if sep and head and "/" not in tail and "\\" not in tail:
        try:
            scale = float(tail)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected PATH or PATH:SCALE with a number SCALE, got {value!r}"
            ) from None
        path = head
    if not math.isfinite(scale):
        raise argparse.ArgumentTypeError(f"expected a finite SCALE, got {value!r}")
    if not path.strip():
        raise argparse.ArgumentTypeError(f"expected PATH or PATH:SCALE, got {value!r}")
    return path, scale


def is_single_file(model: str) -> bool:
    """``--model`` names a single-file checkpoint rather than a diffusers folder."""
    path = Path(model).expanduser()
    return path.suffix.lower() in SINGLE_FILE_SUFFIXES and not path.is_dir()


def resolve_dtype(name: str, device: Any) -> Any:
    """The torch dtype of ``--dtype``: ``auto`` is fp16 on CUDA and fp32 elsewhere."""
    import torch

    if name == "auto":
        return torch.float16 if str(device).startswith("cuda") else torch.float32
    return {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[name]


def _pipeline_class(config: str | None) -> Any:
    """The pipeline class a single file loads into: the one ``--config``'s
    ``model_index.json`` names, else SDXL's."""
    import diffusers

    name = "StableDiffusionXLPipeline"
    if config is not None:
        name = json.loads((Path(config) / "model_index.json").read_text())["_class_name"]
    cls = getattr(diffusers, name, None)
    if cls is None or not hasattr(cls, "from_single_file"):
        raise ValueError(f"{name} (from --config) cannot load single-file checkpoints")
    return cls


def _from_single_file(model: str, options: PipelineOptions, dtype: Any) -> Any:
    from clipguide.cli.args import offline

    cls = _pipeline_class(options.config)
    kwargs: dict[str, Any] = {"torch_dtype": dtype, "local_files_only": offline()}
    if options.config is not None:
        kwargs.update(config=options.config, local_files_only=True)
    return cls.from_single_file(str(Path(model).expanduser()), **kwargs)


def _add_loras(pipe: Any, loras: tuple[tuple[str, float], ...]) -> None:
    """Load each LoRA as its own adapter and set their strengths."""
    if not loras:
        return
    if not callable(getattr(pipe, "load_lora_weights", None)):
        raise ValueError(f"{type(pipe).__name__} cannot load LoRAs (no load_lora_weights)")
    names = []
    for i, (path, _) in enumerate(loras):
        name = f"lora{i}"
        pipe.load_lora_weights(str(Path(path).expanduser()), adapter_name=name)
        names.append(name)
    pipe.set_adapters(names, adapter_weights=[scale for _, scale in loras])


def _quiet_loading() -> None:
    """No loading bars from diffusers and transformers (``--no-progress``)."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()


def load_pipeline(
    model: str,
    scheduler: str | None = None,
    device: str | None = None,
    progress: bool = True,
    options: PipelineOptions | None = None,
) -> Any:
    """A model registered by name (the micro world), or any diffusers text-to-image pipeline
    by repo id, folder or single file, on ``device`` (default: cuda if any)."""
    import torch

    from clipguide.cli.models import named_model
    from clipguide.cli.schedulers import scheduler_from_config, with_karras

    options = options or PipelineOptions(scheduler=scheduler, progress=progress)
    if not options.progress:
        _quiet_loading()
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    named = named_model(model)
    if named is not None:
        pipe = named.load(device, options.scheduler, options.progress)
    else:
        dtype = resolve_dtype(options.dtype, device)
        if is_single_file(model):
            pipe = _from_single_file(model, options, dtype)
        else:
            from diffusers import AutoPipelineForText2Image

            extra = {"variant": options.variant} if options.variant else {}
            pipe = AutoPipelineForText2Image.from_pretrained(model, dtype=dtype, **extra)
        if options.scheduler is not None:
            pipe.scheduler = scheduler_from_config(options.scheduler, pipe.scheduler.config)
        pipe.set_progress_bar_config(disable=not options.progress)
        _add_loras(pipe, options.loras)
        pipe = pipe.to(device)
    if options.karras and not getattr(pipe.scheduler.config, "use_karras_sigmas", False):
        pipe.scheduler = with_karras(pipe.scheduler)
    return pipe
