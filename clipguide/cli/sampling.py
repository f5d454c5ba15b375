"""Sampling for ``clipguide generate``: the guide CLIP and decoder for CLIP guidance, best-of-N
selection, and a stop when the latents stop being finite (an image would come out black)."""

from __future__ import annotations

import math
from pathlib import Path

from clipguide.cli.args import CLIError
from clipguide.cli.models import NamedModel, decoder_owner

__all__ = [
    "decoder_choice",
    "guide_decoder",
    "load_guide",
    "NonFiniteSample",
    "finite_guard",
    "sample",
]

BIGG = "ViT-bigG-14/laion2b_s39b_b160k"  # load_clip's default, named in messages and records


def decoder_choice(choice: str | None, model: NamedModel) -> str:
    """``--guide-decoder`` checked before any model loads; its default filled in (the model's
    own decoder when it offers one, else its VAE)."""
    choice = choice or next(iter(model.decoders), "vae")
    if choice == "vae" or choice in model.decoders:
        return choice
    owner = decoder_owner(choice)
    if owner is not None:
        name, other = owner
        raise CLIError(
            f"--guide-decoder {choice!r} is {other.description}'s decoder (--model {name}); "
            "accepted for this model: 'vae' or a folder holding an AutoencoderTiny for its "
            "latents"
        )
    if not Path(choice).is_dir():
        named = "".join(f", {n!r}" for n in model.decoders)
        raise CLIError(
            f"--guide-decoder {choice!r} is not a folder; accepted: 'vae'{named} or a folder "
            "holding an AutoencoderTiny"
        )
    return choice


def guide_decoder(choice: str, pipe, model: NamedModel):
    """The decoder guidance uses: None (the pipeline's VAE), the model's own, or an
    ``AutoencoderTiny`` from a folder."""
    if choice == "vae":
        return None
    if choice in model.decoders:
        return model.decoders[choice](pipe)
    from diffusers import AutoencoderTiny

    try:
        decoder = AutoencoderTiny.from_pretrained(choice, torch_dtype=pipe.unet.dtype)
    except Exception as err:  # noqa: BLE001 - any loading failure names the option
        raise CLIError(f"--guide-decoder {choice!r}: not an AutoencoderTiny: {err}", 1) from err
    return decoder.to(pipe.device).eval().requires_grad_(False)


def load_guide(pipe, args, model: NamedModel):
    """The guide CLIP (for guidance and best-of-N) and its name; ``(None, None)`` if unused.

    A pipeline with SDXL's bigG text tower lends it, and only a vision tower is loaded (that
    must fit it); for any other (SD 1.x/2.x) ``--guide-clip`` names a standalone CLIP whose
    own towers guide and pick.
    """
    from clipguide.model import load_clip
    from clipguide.model.pipeline import lends_text_tower

    vision = args.guide_clip or model.guide_clip
    if not (args.clip_guidance or args.best_of > 1):
        return None, vision
    needs = "--clip-guidance" if args.clip_guidance else f"--best-of {args.best_of}"
    if not lends_text_tower(pipe) and vision is None:
        raise CLIError(
            f"{needs} needs a CLIP to guide and pick with, and --model {args.model!r} "
            f"({type(pipe).__name__}) has no bigG-style text tower to pair one with; name a "
            f"standalone CLIP with --guide-clip (e.g. --guide-clip {BIGG}, an hf-hub: id or a "
            "local open_clip folder), or use --best-of 1 without --clip-guidance"
        )
    try:
        if lends_text_tower(pipe):
            return load_clip(pipe, vision=vision), vision
        return load_clip(vision, device=pipe.device), vision
    except Exception as err:  # noqa: BLE001 - any loading failure names the option
        shown = vision or f"{BIGG} (the default)"
        raise CLIError(f"--guide-clip {shown}: {err}", code=1) from err


class NonFiniteSample(CLIError):
    """Sampling diverged (NaN or infinite latents): an image would come out black."""


def finite_guard(args):
    """A ``callback_on_step_end`` that stops sampling when the latents stop being finite."""
    import torch

    def check(pipe, step: int, timestep, kwargs: dict) -> dict:
        latents = kwargs.get("latents")
        if latents is not None and not bool(torch.isfinite(latents).all()):
            raise NonFiniteSample(
                f"sampling diverged at step {step + 1} (non-finite latents) with "
                f"--cfg {args.cfg_scale} --clip-guidance {args.clip_guidance}; lower them",
                code=1,
            )
        return kwargs

    return check


def sample(pipe, call: dict, seeds: list[int], args, guide, vision, model: NamedModel, text: str):
    """Sample, with CLIP guidance attached and best-of-N selection when asked (``text``: the
    prompt's plain text, which best-of-N ranks by).

    Returns the images, the seed that regenerates each, per-image best-of-N records and
    per-image candidates, best first (both empty lists without best-of-N), and each image's
    layout candidate (None: no layout read from the prompt was used).
    """
    import contextlib

    from clipguide.cli.regions import regions_attached
    from clipguide.conditioning.layout_policy import plan_candidates, regional_prompt
    from clipguide.guidance import CLIPGuidance, GuidanceSettings

    attached = contextlib.ExitStack()
    attached.enter_context(regions_attached(pipe, args))  # prompts encoded before sampling
    if args.clip_guidance:
        settings = GuidanceSettings(scale=args.clip_guidance, mode=args.clip_guidance_mode)
        decoder = guide_decoder(args.guide_decoder, pipe, model)
        attached.enter_context(CLIPGuidance(guide, settings, decoder=decoder).attach(pipe))
    with attached:
        if args.best_of == 1:
            (single,) = plan_candidates(text, 1, args.layout)
            laid = single.layout is not None
            with (
                regional_prompt(single.layout, single.use).attach(pipe)
                if laid
                else (contextlib.nullcontext())
            ):
                images = pipe(**call).images
            return images, seeds, [], [], [single if laid else None] * len(images)
        return _best_of(pipe, call, len(seeds), args, guide, vision, text)


def _best_of(pipe, call: dict, count: int, args, guide, vision, text: str):
    """``count`` images, each the guide's best of ``--best-of`` candidates with seeds counted
    on from ``--seed``; their seeds and the candidates' records."""
    from clipguide.scoring import CLIPScorer, best_of_n

    n = args.best_of
    scorer = CLIPScorer(guide, progress=False)  # the pipeline shows the bar
    kwargs = {k: v for k, v in call.items() if k not in ("prompt", "generator")}
    kwargs.pop("num_images_per_prompt")  # the embeddings (or negative_prompt) stay
    from clipguide.cli.regions import layout_record

    images, chosen, picks, candidates, layouts = [], [], [], [], []
    for i in range(count):
        result = best_of_n(
            pipe, text, n, scorer, seed=args.seed + i * n, batch_size=n,
            progress=False, method=args.method, layouts=args.layout, **kwargs,
        )  # fmt: skip
        candidates.append(result.images)
        images.append(result.images[0])
        chosen.append(result.seeds[0])
        scores = [round(float(x), 4) if math.isfinite(float(x)) else None for x in result.scores]
        picks.append(
            {
                "n": n,
                "judge": vision or BIGG,
                "method": args.method,
                "candidate_seeds": result.seeds,
                "candidate_scores": scores,
                "candidate_layouts": [layout_record(c) for c in result.candidates],
                # the structured score's layout term reads the layouts drawn on (its weight)
                "layout_weight": scorer.weights.layouts
                if args.method == "structured" and any(c.layout for c in result.candidates)
                else 0.0,
            }
        )
        layouts.append(result.candidates[0] if result.candidates else None)
    return images, chosen, picks, candidates, layouts
