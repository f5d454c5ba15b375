"""CLIPGuidance: settings plus the per-step gradient computation, model-agnostic."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch

from clipguide.model.text_cache import cached_text_embeds
from clipguide.scoring.captions.parse import plain_prompt
from clipguide.scoring.metrics import cosine

from .checks import check, check_clip, check_decoder, check_target, describe
from .decode import decode_latents, decoder_ready, shrink_latents
from .loss import make_views, spherical_distance
from .schedulers import NoiseLevel, output_change_from_eps, split_model_output
from .settings import GuidanceSettings, with_overrides
from .update import eps_change

__all__ = ["CLIPGuidance"]

# CLIPGuidance's own keyword arguments (the rest are GuidanceSettings fields)
_OWN = ("decoder", "target", "on_step", "record", "generator")


class CLIPGuidance:
    """CLIP-gradient guidance for diffusers pipelines.

    Args:
        clip: a ``clipguide.CLIP`` with a vision tower (and a text tower for text targets).
        settings: a :class:`GuidanceSettings` (default: its defaults); ``overrides`` replace
            some of its fields (``CLIPGuidance(clip, scale=2, mode="full")``), validated there.
        decoder: latents -> image decoder (default: the pipeline's VAE). A tiny one makes
            each guided step several times cheaper at nearly the same gain: ``AutoencoderTiny``
            (TAESDXL for SDXL; ``clipguide.shapes.load_tiny_decoder()`` for the micro world).
        target: ``None`` (the prompt), a text or list of texts, or an embedding tensor (D,) or
            (N, D) (e.g. ``clip.encode_image(image)``).
        on_step: called with each step's record (dict), as appended to ``history``.
        record: with ``scale=0``, still measure and record each active step's similarity
            without touching the sampling (for plotting an unguided run against a guided one);
            in ``full`` mode the conditional prediction's x0 is measured, as a guided run would.
        generator: a CPU ``torch.Generator`` the random views draw from, left as the caller
            keeps it; by default one seeded with ``settings.seed`` at every run.
    """

    def __init__(
        self,
        clip: Any,
        settings: GuidanceSettings | None = None,
        *,
        decoder: Any = None,
        target: str | Sequence[str] | torch.Tensor | None = None,
        on_step: Callable[[dict], None] | None = None,
        record: bool = False,
        generator: torch.Generator | None = None,
        **overrides: Any,
    ) -> None:
        check_clip(clip)
        check_target(target, clip)
        check_decoder(decoder)
        check(on_step is None or callable(on_step), "on_step", on_step, "None or a callable")
        check(isinstance(record, bool), "record", record, "True or False")
        _check_generator(generator, overrides)
        self.settings = with_overrides(settings, overrides, others=("clip", "settings", *_OWN))
        self.clip = clip
        self.decoder = decoder
        self.target = target
        self.on_step = on_step
        self.record = record
        self.generator = generator
        self.history: list[dict] = []
        self._generator = generator or torch.Generator().manual_seed(self.settings.seed)
        self._warned_nonfinite = False
        self._attachment: Any = None

    def __repr__(self) -> str:
        return f"CLIPGuidance({self.settings})"

    def replace(self, **changes: Any) -> CLIPGuidance:
        """A copy with some settings (or ``clip``/``settings``/``decoder``/``target``/
        ``on_step``/``record``/``generator``) changed."""
        own = {name: getattr(self, name) for name in _OWN}
        own.update((k, changes.pop(k)) for k in list(changes) if k in own)
        clip = changes.pop("clip", self.clip)
        settings = changes.pop("settings", self.settings)
        return CLIPGuidance(clip, settings, **own, **changes)

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

    def wants(self, position: int, total: int) -> bool:
        """Whether evaluation ``position`` of ``total`` is guided (or, with ``scale=0`` and
        ``record``, measured)."""
        if self.settings.scale == 0 and not self.record:
            return False
        return self.settings.active(position, total)

    # -- targets -----------------------------------------------------------------------------
    def new_run(self) -> None:
        """Start a new sampling run: clear ``history`` and reseed the view generator."""
        self.history = []
        if self.generator is None:
            self._generator.manual_seed(self.settings.seed)

    def _encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        # the shared text-encoding cache: conditioning, guidance and scoring encode once; the
        # CLIP compares images with the prompt's plain text (no weight syntax, no BREAK)
        plain = [plain_prompt(t) or t for t in texts]
        return cached_text_embeds(self.clip, plain).float()

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
    def _features(self, images: torch.Tensor) -> torch.Tensor:
        """fp32 image embeddings of ``settings.views`` views of each image, view-major:
        (views * B, D)."""
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
        return self.clip.image_features(pixels).float()

    def _distance(self, images: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, ...]:
        views = self.settings.views
        feats = self._features(images)
        tgt = targets.to(feats.device).repeat(views, 1)
        b = images.shape[0]
        dist = spherical_distance(feats, tgt).view(views, b).mean(0)
        sim = cosine(feats, tgt).view(views, b).mean(0)
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


def _check_generator(generator: Any, overrides: dict) -> None:
    """A CPU generator (the views are drawn on the CPU), and not with an explicit seed."""
    if generator is None:
        return
    accepted = "None or a CPU torch.Generator"
    check(isinstance(generator, torch.Generator), "generator", generator, accepted)
    check(generator.device.type == "cpu", "generator", generator, accepted)
    if "seed" in overrides:
        raise ValueError(
            f"seed={describe(overrides['seed'])} and a generator were both given; the views "
            "draw from one of them: pass seed or generator, not both"
        )
