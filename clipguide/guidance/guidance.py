"""CLIPGuidance: validated settings plus the per-step gradient computation, model-agnostic."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch

from .checks import check, check_clip, check_decoder, check_target, is_int, is_real
from .decode import decode_latents, decoder_ready, shrink_latents
from .loss import cosine, make_views, spherical_distance
from .schedulers import NoiseLevel, output_change_from_eps, split_model_output
from .update import eps_change

__all__ = ["GuidanceSettings", "CLIPGuidance"]

MODES = ("fast", "full")


@dataclasses.dataclass(frozen=True)
class GuidanceSettings:
    """Frozen, validated guidance settings (see ``CLIPGuidance`` for their meaning).

    The defaults (a push of 4x the classifier-free-guidance correction on every other model
    evaluation of the middle half of the run) were chosen on the micro world with
    ``benchmarks/guidance.py`` and ``benchmarks/shapes_quality.py``, whose measured costs and
    gains the README reports. For the cheapest guidance, pass a tiny decoder and ``every=10``
    or ``every=5``. Numbers are stored as Python ``float``/``int``; every float is finite.
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
    decode_size: int | None = None

    def __post_init__(self) -> None:
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
        check(
            self.decode_size is None or (integer(self.decode_size) and self.decode_size >= 1),
            "decode_size",
            self.decode_size,
            "None or an int >= 1 (latent pixels of the shorter side)",
        )
        for name in ("scale", "start", "stop", "min_crop", "noise"):
            object.__setattr__(self, name, float(getattr(self, name)))
        for name in ("views", "every", "seed"):
            object.__setattr__(self, name, int(getattr(self, name)))
        if self.max_rms is not None:
            object.__setattr__(self, "max_rms", float(self.max_rms))
        if self.decode_size is not None:
            object.__setattr__(self, "decode_size", int(self.decode_size))

    def active(self, position: int, total: int) -> bool:
        """Whether model evaluation ``position`` of ``total`` is guided: inside the window, and
        every ``every``-th evaluation counted from the window's first."""
        frac = position / max(total, 1)
        first = math.ceil(self.start * total - 1e-9)  # first evaluation in the window
        return self.start <= frac < self.stop and (position - first) % self.every == 0


class CLIPGuidance:
    """CLIP-gradient guidance for diffusers pipelines.

    Args:
        clip: a ``clipguide.CLIP`` with a vision tower (and a text tower for text targets).
        scale: strength. With ``normalize`` (default) the push is ``scale`` times the size of the
            classifier-free-guidance correction (or of the predicted noise without CFG).
        mode: ``"fast"``: gradient w.r.t. the predicted x0 through the decoder only (MPGD,
            He et al. 2024); ``"full"``: gradient through the UNet and decoder (classic CLIP
            guidance; one extra UNet forward+backward per guided step).
        views: number of random cutouts per image (1 = a plain resize of the centre square).
        start, stop: guided window as fractions of the model evaluations; ``every``: guide one
            evaluation in ``every``.
        decoder: latents -> image decoder (default: the pipeline's VAE). A tiny one makes
            each guided step several times cheaper at nearly the same gain: ``AutoencoderTiny``
            (TAESDXL for SDXL; ``clipguide.shapes.load_tiny_decoder()`` for the micro world).
        target: ``None`` (the prompt), a text or list of texts, or an embedding tensor (D,) or (N, D)
            (e.g. ``clip.encode_image(image)``).
        on_step: called with each step's record (dict), as appended to ``history``.
        record: with ``scale=0``, still measure and record each active step's similarity
            without touching the sampling (for plotting an unguided run against a guided one);
            in ``full`` mode the conditional prediction's x0 is measured, as a guided run would.
        checkpointing: gradient checkpointing in the decoder while guiding (less memory).
        decode_size: decode a resized copy of the predicted latents whose shorter side is this
            many latent pixels (e.g. 32 -> a 256 px image for an 8x VAE, enough for a 224 px
            CLIP) instead of the full-size latents: the decoder cost drops with the area.
        max_rms, normalize, min_crop, flip, noise, seed: see ``GuidanceSettings``.
    """

    def __init__(
        self,
        clip: Any,
        *,
        scale: float = 4.0,
        mode: str = "fast",
        views: int = 1,
        start: float = 0.25,
        stop: float = 0.75,
        every: int = 2,
        decoder: Any = None,
        target: str | Sequence[str] | torch.Tensor | None = None,
        normalize: bool = True,
        max_rms: float | None = None,
        min_crop: float = 0.6,
        flip: bool = True,
        noise: float = 0.02,
        seed: int = 0,
        checkpointing: bool = False,
        decode_size: int | None = None,
        on_step: Callable[[dict], None] | None = None,
        record: bool = False,
    ) -> None:
        check_clip(clip)
        check_target(target, clip)
        check_decoder(decoder)
        check(on_step is None or callable(on_step), "on_step", on_step, "None or a callable")
        check(isinstance(record, bool), "record", record, "True or False")
        self.settings = GuidanceSettings(
            scale=scale,
            mode=mode,
            views=views,
            start=start,
            stop=stop,
            every=every,
            normalize=normalize,
            max_rms=max_rms,
            min_crop=min_crop,
            flip=flip,
            noise=noise,
            seed=seed,
            checkpointing=checkpointing,
            decode_size=decode_size,
        )
        self.clip = clip
        self.decoder = decoder
        self.target = target
        self.on_step = on_step
        self.record = record
        self.history: list[dict] = []
        self._generator = torch.Generator().manual_seed(self.settings.seed)
        self._warned_nonfinite = False
        self._attachment: Any = None

    def __repr__(self) -> str:
        return f"CLIPGuidance({self.settings})"

    def replace(self, **changes: Any) -> CLIPGuidance:
        """A copy with some settings (or ``clip``/``decoder``/``target``/``on_step``) changed."""
        kwargs = dataclasses.asdict(self.settings)
        kwargs.update(
            decoder=self.decoder, target=self.target, on_step=self.on_step, record=self.record
        )
        clip = changes.pop("clip", self.clip)
        kwargs.update(changes)
        return CLIPGuidance(clip, **kwargs)

    # -- attaching ---------------------------------------------------------------------------
    def attach(self, pipe: Any) -> Any:
        """Hook into a stock diffusers pipeline; use as ``with guidance.attach(pipe): pipe(...)``.

        Several guidances may be attached to one pipeline at once and detached in any order.
        """
        from .attach import PipelineAttachment

        if self._attachment is not None:
            raise RuntimeError(
                f"this CLIPGuidance is already attached to pipe="
                f"{type(self._attachment.pipe).__name__}; call detach() first, or attach a copy "
                "(guidance.replace())"
            )
        self._attachment = PipelineAttachment(self, pipe)
        return self._attachment

    def detach(self) -> None:
        """Remove every hook this guidance installed (no-op when not attached)."""
        if self._attachment is not None:
            self._attachment.detach()

    # -- targets -----------------------------------------------------------------------------
    def new_run(self) -> None:
        """Start a new sampling run: clear ``history`` and reseed the view generator."""
        self.history = []
        self._generator.manual_seed(self.settings.seed)

    def _encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        # the shared text-encoding cache: conditioning, guidance and scoring encode once
        from clipguide.model.text_cache import cached_text_embeds

        return cached_text_embeds(self.clip, list(texts)).float()

    def targets(self, batch: int, prompts: Any = None, per_prompt: int = 1) -> torch.Tensor:
        """Normalised fp32 target embeddings (batch, D), one per generated image."""
        target = self.target if self.target is not None else prompts
        if target is None:
            raise ValueError(
                "CLIPGuidance has no target: the pipeline was called without a text prompt "
                "(prompt_embeds?); pass target= (a text or an embedding) to CLIPGuidance"
            )
        if isinstance(target, str):
            target = [target]
        emb = target.float() if isinstance(target, torch.Tensor) else self._encode_texts(target)
        emb = torch.nn.functional.normalize(emb.reshape(-1, emb.shape[-1]), dim=-1)
        rows = emb.shape[0]
        if rows == batch:
            return emb
        if rows == 1:
            return emb.expand(batch, -1)
        if rows * per_prompt == batch:
            return emb.repeat_interleave(per_prompt, dim=0)
        raise ValueError(
            f"target has {rows} rows but the pipeline generates {batch} images "
            f"({per_prompt} per prompt); accepted: 1, {batch} or {batch // max(per_prompt, 1)} rows"
        )

    # -- the guided step ---------------------------------------------------------------------
    def _distance(self, images: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, ...]:
        s, pre = self.settings, self.clip.preprocess
        views = make_views(
            images,
            s.views,
            pre.image_size,
            min_crop=s.min_crop,
            flip=s.flip,
            noise=s.noise,
            generator=self._generator,
        )
        vision = self.clip.vision_model
        pixels = pre.from_tensor(views).to(device=vision.device, dtype=vision.dtype)
        feats = self.clip.image_features(pixels).float()
        tgt = targets.to(feats.device).repeat(s.views, 1)
        b = images.shape[0]
        dist = spherical_distance(feats, tgt).view(s.views, b).mean(0)
        sim = cosine(feats, tgt).view(s.views, b).mean(0)
        return dist, sim

    def _decoder(self, decoder: Any) -> Any:
        decoder = self.decoder if self.decoder is not None else decoder
        if decoder is None:
            raise ValueError("no decoder: pass decoder= or attach to a pipeline with a vae")
        return decoder

    def _clip_working(self, device: torch.device) -> Any:
        """The CLIP's vision tower placed for this step (following its pipeline, or borrowing
        ``device``); a duck-typed CLIP without ``working`` is used where it is."""
        working = getattr(self.clip, "working", None)
        return working(device) if callable(working) else contextlib.nullcontext()

    def gradient(
        self,
        latents: torch.Tensor,
        x0: torch.Tensor,
        level: NoiseLevel,
        targets: torch.Tensor,
        *,
        decoder: Any = None,
        model_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(dL/dx per latent, distance per image, similarity per image) at this step.

        ``fast`` differentiates w.r.t. x0 and maps to x with ``dx0/dx ~ 1/alpha`` (the UNet
        Jacobian dropped, MPGD); ``full`` differentiates through ``model_fn`` (latents -> model
        output, run with grad).
        """
        full = self.settings.mode == "full"
        if full and model_fn is None:
            raise ValueError(
                "mode='full' needs model_fn (the denoiser, latents -> model output) to "
                "differentiate through; attach() provides it"
            )
        decoder = self._decoder(decoder)
        ready_ctx = decoder_ready(
            decoder, latents.device, checkpointing=self.settings.checkpointing
        )
        with torch.enable_grad(), ready_ctx as ready, self._clip_working(latents.device):
            if full:
                leaf = latents.detach().float().clone().requires_grad_(True)
                guided_x0 = split_model_output(model_fn(leaf).float(), leaf, level)[0]
            else:
                leaf = x0.detach().float().clone().requires_grad_(True)
                guided_x0 = leaf
            small = shrink_latents(guided_x0, self.settings.decode_size)
            dist, sim = self._distance(decode_latents(ready, small), targets)
            (grad,) = torch.autograd.grad(dist.sum(), leaf)
        if not full:
            grad = grad / level.alpha
        return grad, dist.detach(), sim.detach()

    @torch.no_grad()
    def measure(
        self, x0: torch.Tensor, targets: torch.Tensor, *, decoder: Any = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(distance, similarity) per image of the decoded ``x0``, without gradients."""
        decoder = self._decoder(decoder)
        with decoder_ready(decoder, x0.device) as ready, self._clip_working(x0.device):
            small = shrink_latents(x0.float(), self.settings.decode_size)
            return self._distance(decode_latents(ready, small), targets)

    def _record(self, step: int, timestep: float, level: NoiseLevel, dist, sim, skipped) -> dict:
        record = {
            "step": step,
            "timestep": timestep,
            "sigma": level.sigma,
            "loss": dist.tolist(),
            "similarity": sim.tolist(),
            "skipped": skipped.tolist(),
        }
        self.history.append(record)
        if self.on_step is not None:
            self.on_step(record)
        return record

    def record_step(
        self,
        x0: torch.Tensor,
        level: NoiseLevel,
        targets: torch.Tensor,
        *,
        step: int,
        timestep: float,
        decoder: Any = None,
    ) -> dict:
        """Measure and record a step without guiding it (``scale=0, record=True``).

        ``skipped`` marks images whose measurement is not finite.
        """
        dist, sim = self.measure(x0, targets, decoder=decoder)
        return self._record(step, timestep, level, dist, sim, ~torch.isfinite(dist))

    def output_change(
        self,
        latents: torch.Tensor,
        x0: torch.Tensor,
        level: NoiseLevel,
        targets: torch.Tensor,
        *,
        reference: torch.Tensor | None,
        step: int,
        timestep: float,
        decoder: Any = None,
        model_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Change to add to the (CFG-combined) model output for this step; records the step."""
        s = self.settings
        grad, dist, sim = self.gradient(
            latents, x0, level, targets, decoder=decoder, model_fn=model_fn
        )
        delta, finite = eps_change(
            grad,
            level.sigma,
            s.scale,
            reference=reference if s.normalize else None,
            max_rms=s.max_rms,
        )
        if not bool(finite.all()) and not self._warned_nonfinite:
            self._warned_nonfinite = True
            warnings.warn(
                f"CLIP guidance gradient is not finite at step {step} for "
                f"{int((~finite).sum())} image(s); skipping guidance for them (warned once)",
                RuntimeWarning,
                stacklevel=2,
            )
        self._record(step, timestep, level, dist, sim, ~finite)
        return output_change_from_eps(delta, level)
