"""Guidance settings, written once: a frozen dataclass validated at construction.

``CLIPGuidance(clip, settings=None, **overrides)`` takes these fields as keyword overrides; the
fields, their defaults and their checks live here only.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from .checks import check, is_int, is_real

__all__ = ["GuidanceSettings", "MODES", "setting_names", "with_overrides"]

MODES = ("fast", "full")


@dataclasses.dataclass(frozen=True)
class GuidanceSettings:
    """Frozen, validated CLIP-guidance settings.

    Attributes:
        scale: strength. With ``normalize`` (default) the push is ``scale`` times the size of
            the classifier-free-guidance correction (or of the predicted noise without CFG).
            0 guides nothing (with ``record=True`` the run is still measured).
        mode: ``"fast"``: gradient w.r.t. the predicted x0 through the decoder only (MPGD,
            He et al. 2024); ``"full"``: gradient through the UNet and decoder (classic CLIP
            guidance; one extra UNet forward+backward per guided step).
        views: number of random cutouts per image (1 = a plain resize of the centre square).
        start, stop: guided window as fractions of the model evaluations.
        every: guide one evaluation in ``every``, counted from the window's first.
        normalize: scale the push to the CFG correction (else ``scale * sigma * grad``).
        max_rms: cap on the per-image RMS of the change of the predicted noise (None: none).
        min_crop, flip, noise: cutouts' smallest side (fraction of the image's shorter side),
            random horizontal flips, and Gaussian noise added to each view.
        seed: seed of the views' generator, reseeded at every sampling run.
        checkpointing: gradient checkpointing in the decoder while guiding (less memory).
        decode_size: decode a resized copy of the predicted latents whose shorter side is this
            many latent pixels (e.g. 32 -> a 256 px image for an 8x VAE) instead of the
            full-size latents: the decoder's cost and memory drop with the area. ``"auto"``
            (default): the size the CLIP needs, the fewest latent pixels whose decode covers the
            CLIP's input (its smallest cutout with ``views > 1``): 28 for SDXL's VAE and a
            224 px CLIP; full size where that is no smaller, or where the decoder's scale
            factor cannot be read (a plain callable). ``None``: always full size.
        decode_chunk: images decoded and judged at once; each chunk's gradient is taken before
            the next is decoded, so the activations saved for the backward are one chunk's,
            whatever the batch (default 1). ``None``: the whole batch in one pass. The views'
            random draws are the same either way.

    The defaults push by 4x the classifier-free-guidance correction on every other model
    evaluation of the middle half of the run, decoding at the CLIP's input size one image at a
    time, so that a guided step of SDXL + bigG holds one image's activations whatever the batch
    (README, "Memory"). On the micro world's held-out test split they gain over plain sampling,
    part of it seen only by the guiding CLIP; a tiny decoder gains nearly as much for less, and
    choosing among samples (best-of-N) gains more per unit of compute (docs/measurements.md,
    "Measuring quality", with the figures).
    Numbers are stored as Python ``float``/``int``; every float is finite.
    """

    scale: float = 4.0
    mode: str = "fast"
    views: int = 1
    start: float = 0.25
    stop: float = 0.75
    every: int = 2
    normalize: bool = True
    max_rms: float | None = None
    min_crop: float = 0.6
    flip: bool = True
    noise: float = 0.02
    seed: int = 0
    checkpointing: bool = False
    decode_size: int | str | None = "auto"
    decode_chunk: int | None = 1

    def __post_init__(self) -> None:
        self._validate()
        for name in ("scale", "start", "stop", "min_crop", "noise"):
            object.__setattr__(self, name, float(getattr(self, name)))
        for name in ("views", "every", "seed"):
            object.__setattr__(self, name, int(getattr(self, name)))
        if self.max_rms is not None:
            object.__setattr__(self, "max_rms", float(self.max_rms))
        for name in ("decode_size", "decode_chunk"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                object.__setattr__(self, name, int(value))

    def _validate(self) -> None:
        real, integer = is_real, is_int
        check(real(self.scale) and self.scale >= 0, "scale", self.scale, "a finite number >= 0")
        check(
            isinstance(self.mode, str) and self.mode in MODES, "mode", self.mode, f"one of {MODES}"
        )
        check(integer(self.views) and self.views >= 1, "views", self.views, "an int >= 1")
        check(real(self.start) and 0 <= self.start < 1, "start", self.start, "0 <= start < 1")
        check(
            real(self.stop) and self.start < self.stop <= 1,
            "stop",
            self.stop,
            f"start ({self.start}) < stop <= 1",
        )
        check(integer(self.every) and self.every >= 1, "every", self.every, "an int >= 1")
        for flag in ("normalize", "flip", "checkpointing"):
            value = getattr(self, flag)
            check(isinstance(value, bool), flag, value, "True or False")
        check(
            self.max_rms is None or (real(self.max_rms) and self.max_rms > 0),
            "max_rms",
            self.max_rms,
            "None or a finite number > 0",
        )
        check(
            real(self.min_crop) and 0 < self.min_crop <= 1,
            "min_crop",
            self.min_crop,
            "0 < min_crop <= 1",
        )
        check(real(self.noise) and self.noise >= 0, "noise", self.noise, "a finite number >= 0")
        check(
            integer(self.seed) and -(2**63) <= self.seed < 2**64,
            "seed",
            self.seed,
            "an int in [-2**63, 2**64) (what torch.Generator.manual_seed takes)",
        )
        size = self.decode_size
        check(
            size is None
            or (isinstance(size, str) and size == "auto")
            or (integer(size) and size >= 1),
            "decode_size",
            size,
            "'auto', None or an int >= 1 (latent pixels of the shorter side)",
        )
        chunk = self.decode_chunk
        check(
            chunk is None or (integer(chunk) and chunk >= 1),
            "decode_chunk",
            chunk,
            "None (the whole batch) or an int >= 1 (images per chunk)",
        )

    def active(self, position: int, total: int) -> bool:
        """Whether model evaluation ``position`` of ``total`` is guided: inside the window, and
        every ``every``-th evaluation counted from the window's first."""
        frac = position / max(total, 1)
        first = math.ceil(self.start * total - 1e-9)  # first evaluation in the window
        return self.start <= frac < self.stop and (position - first) % self.every == 0


def setting_names() -> tuple[str, ...]:
    """The names of :class:`GuidanceSettings`' fields."""
    return tuple(f.name for f in dataclasses.fields(GuidanceSettings))


def with_overrides(
    settings: GuidanceSettings | None, overrides: Mapping[str, Any], *, others: tuple = ()
) -> GuidanceSettings:
    """``settings`` (default: the defaults) with some fields replaced, validated again.

    An unknown name is a ``TypeError`` listing the settings and ``others`` (the caller's own
    keyword arguments), as Python's own error for an unknown keyword would not.
    """
    if settings is not None and not isinstance(settings, GuidanceSettings):
        raise TypeError(
            f"settings={settings!r:.80} is not valid; accepted: None or a GuidanceSettings"
        )
    unknown = sorted(set(overrides) - set(setting_names()))
    if unknown:
        raise TypeError(
            f"unknown guidance setting(s) {unknown}; accepted: the GuidanceSettings fields "
            f"{list(setting_names())}" + (f" and {list(others)}" if others else "")
        )
    if settings is None:
        return GuidanceSettings(**overrides)
    return dataclasses.replace(settings, **overrides)
