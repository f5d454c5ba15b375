"""The shipped micro-world models as a real diffusers ``StableDiffusionXLPipeline``."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from clipguide.cli.schedulers import SCHEDULERS, scheduler_from_config

__all__ = [
    "CLIP_NAMES",
    "DEFAULT_GUIDANCE_SCALE",
    "DEFAULT_STEPS",
    "SCHEDULERS",
    "WEIGHTS_DIR",
    "load_shapes_clip",
    "load_tiny_decoder",
    "make_scheduler",
    "pipeline",
]

WEIGHTS_DIR = Path(__file__).parent / "weights"
CLIP_NAMES = ("shapes", "shapes-judge")
# Sampling defaults measured on the shipped UNet (benchmarks/shapes_quality.py): classifier-free
# guidance above ~3 saturates colours and empties some images in this small model.
DEFAULT_GUIDANCE_SCALE = 2.0
DEFAULT_STEPS = 20


def _missing(path: Path) -> FileNotFoundError:
    return FileNotFoundError(
        f"micro-world weights missing at {path}; reinstall clipguide or retrain them with "
        f"`python -m clipguide.shapes.training clip|vae|unet|decoder`"
    )


def _check_device_dtype(device, dtype) -> None:
    """Raise naming ``device`` or ``dtype`` before any weights are read."""
    if dtype is not None and not isinstance(dtype, torch.dtype):
        raise TypeError(f"dtype must be a torch.dtype such as torch.float16, got {dtype!r}")
    if dtype is not None and not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating-point torch.dtype, got {dtype}")
    if device is not None:
        try:
            torch.device(device)
        except (RuntimeError, TypeError) as err:
            raise ValueError(
                f"device={device!r} is not a torch device ('cpu', 'cuda', 'cuda:1', ...): "
                f"{str(err).splitlines()[0]}"
            ) from None


def make_scheduler(scheduler: Any = None, config: dict | None = None):
    """A scheduler from a name in SCHEDULERS, a class or an instance (None: shipped Euler)."""
    from diffusers import EulerDiscreteScheduler

    folder = WEIGHTS_DIR / "scheduler"
    if config is not None and not isinstance(config, Mapping):
        raise TypeError(f"config must be a scheduler config dict, got {config!r}")
    if isinstance(scheduler, str) and scheduler not in SCHEDULERS:
        raise ValueError(f"scheduler={scheduler!r} is not one of {SCHEDULERS}")
    if config is None:
        if not folder.is_dir():
            raise _missing(folder)
        config = EulerDiscreteScheduler.load_config(folder)
    if scheduler is None:
        return EulerDiscreteScheduler.from_config(config)
    if isinstance(scheduler, str):
        return scheduler_from_config(scheduler, config)
    if isinstance(scheduler, type):
        return scheduler.from_config(config)
    if hasattr(scheduler, "set_timesteps"):
        return scheduler
    raise TypeError(
        f"scheduler must be None, a name in {SCHEDULERS}, a scheduler class or instance; "
        f"got {scheduler!r} ({type(scheduler).__name__})"
    )


def load_shapes_clip(name: str = "shapes", **kwargs):
    """The shipped guide (``"shapes"``) or judge (``"shapes-judge"``) CLIP via load_clip."""
    from clipguide.model import load_clip

    if name not in CLIP_NAMES:
        raise ValueError(f"name={name!r} is not one of {CLIP_NAMES}")
    return load_clip(name, **kwargs)


def load_tiny_decoder(device: torch.device | str | None = None, dtype: torch.dtype | None = None):
    """The micro world's guidance decoder: a stock diffusers ``AutoencoderTiny`` distilled from
    the shipped VAE (outputs and guidance gradients), as TAESDXL is for SDXL. Pass it as
    ``CLIPGuidance(..., decoder=load_tiny_decoder())``; frozen, in eval mode, fp32 by default."""
    from diffusers import AutoencoderTiny

    _check_device_dtype(device, dtype)
    folder = WEIGHTS_DIR / "decoder"
    if not folder.is_dir():
        raise _missing(folder)
    decoder = AutoencoderTiny.from_pretrained(folder, torch_dtype=dtype or torch.float32)
    decoder.eval().requires_grad_(False)
    return decoder if device is None else decoder.to(device)


def pipeline(
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    scheduler: Any = None,
    *,
    progress: bool = True,
):
    """The micro-world text-to-image pipeline (64x64): shapes CLIP text tower as
    ``text_encoder_2`` (``text_encoder=None``), SDXL-style UNet, small AutoencoderKL."""
    from diffusers import AutoencoderKL, StableDiffusionXLPipeline, UNet2DConditionModel

    from clipguide.model.tokenizer import offline_tokenizer

    _check_device_dtype(device, dtype)
    sampler = make_scheduler(scheduler)  # before the weights: a bad name fails at once
    dtype = dtype or torch.float32
    for part in ("unet", "vae"):
        if not (WEIGHTS_DIR / part).is_dir():
            raise _missing(WEIGHTS_DIR / part)
    clip = load_shapes_clip("shapes", towers=("text",), dtype=dtype)
    unet = UNet2DConditionModel.from_pretrained(WEIGHTS_DIR / "unet", torch_dtype=dtype)
    vae = AutoencoderKL.from_pretrained(WEIGHTS_DIR / "vae", torch_dtype=dtype)
    pipe = StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=None,
        text_encoder_2=clip.text_model,
        tokenizer=None,
        tokenizer_2=offline_tokenizer(open_clip_cleaning=False),  # plain: saves and reloads
        unet=unet,
        scheduler=sampler,
        force_zeros_for_empty_prompt=False,  # trained with the empty prompt as unconditional
        add_watermarker=False,
    )
    if device is not None:
        pipe.to(device)
    pipe.set_progress_bar_config(disable=not progress)
    return pipe
