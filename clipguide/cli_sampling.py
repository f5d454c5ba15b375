"""Sampling for ``clipguide generate``: the guide CLIP and decoder for CLIP guidance, best-of-N
selection, and a stop when the latents stop being finite (an image would come out black)."""

from __future__ import annotations

import math
from pathlib import Path

from clipguide.cli import CLIError
from clipguide.cli_args import MICRO_WORLD

__all__ = [
    "decoder_choice",
    "guide_decoder",
    "load_guide",
    "NonFiniteSample",
    "finite_guard",
    "sample",
]


def decoder_choice(choice: str | None, micro: bool) -> str:
    """``--guide-decoder`` checked before any model loads; its default filled in."""
    choice = choice or ("tiny" if micro else "vae")
    if choice == "tiny" and not micro:
        raise CLIError(
            "--guide-decoder 'tiny' is the micro world's decoder; accepted for other models: "
            "'vae' or a folder holding an AutoencoderTiny for their latents"
        )
    if choice not in ("vae", "tiny") and not Path(choice).is_dir():
        raise CLIError(
            f"--guide-decoder {choice!r} is not a folder; accepted: 'vae', 'tiny' (micro world) "
            "or a folder holding an AutoencoderTiny"
        )
    return choice


def guide_decoder(choice: str, pipe):
    """The decoder guidance uses: None (the pipeline's VAE) or an ``AutoencoderTiny``."""
    if choice == "vae":
        return None
    if choice == "tiny":
        from clipguide.shapes import load_tiny_decoder

        return load_tiny_decoder(device=pipe.device)
    from diffusers import AutoencoderTiny

    try:
        decoder = AutoencoderTiny.from_pretrained(choice, torch_dtype=pipe.unet.dtype)
    except Exception as err:  # noqa: BLE001 - any loading failure names the option
        raise CLIError(f"--guide-decoder {choice!r}: not an AutoencoderTiny: {err}", 1) from err
    return decoder.to(pipe.device).eval().requires_grad_(False)


def load_guide(pipe, args, micro: bool):
    """The guide CLIP (for guidance and best-of-N) and its name; ``(None, None)`` if unused."""
    from clipguide.model import load_clip

    vision = args.guide_clip or (MICRO_WORLD if micro else None)
    if not (args.clip_guidance or args.best_of > 1):
        return None, vision
    try:
        return load_clip(pipe, vision=vision), vision
    except Exception as err:  # noqa: BLE001 - any loading failure names the option
        shown = vision or "ViT-bigG-14/laion2b_s39b_b160k (the default)"
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


def sample(pipe, call: dict, seeds: list[int], args, guide, vision):
    """Sample, with CLIP guidance attached and best-of-N selection when asked.

    Returns the images, the seed that regenerates each and per-image best-of-N records.
    """
    import contextlib

    from clipguide import CLIPGuidance, CLIPScorer, best_of_n

    attached = contextlib.nullcontext()
    if args.clip_guidance:
        guidance = CLIPGuidance(
            guide,
            scale=args.clip_guidance,
            mode=args.clip_guidance_mode,
            decoder=guide_decoder(args.guide_decoder, pipe),
        )
        attached = guidance.attach(pipe)
    with attached:
        if args.best_of == 1:
            return pipe(**call).images, seeds, []
        n = args.best_of
        scorer = CLIPScorer(guide, progress=False)  # the pipeline shows the bar
        kwargs = {k: v for k, v in call.items() if k not in ("prompt", "generator")}
        kwargs.pop("num_images_per_prompt")
        images, chosen, picks = [], [], []
        for i in range(len(seeds)):
            result = best_of_n(
                pipe,
                call["prompt"],
                n,
                scorer,
                seed=args.seed + i * n,
                batch_size=n,
                progress=False,
                **kwargs,
            )
            images.append(result.images[0])
            chosen.append(result.seeds[0])
            picks.append(
                {
                    "n": n,
                    "judge": vision or "ViT-bigG-14/laion2b_s39b_b160k",
                    "candidate_seeds": result.seeds,
                    "candidate_scores": [
                        round(float(x), 4) if math.isfinite(float(x)) else None
                        for x in result.scores
                    ],
                }
            )
        return images, chosen, picks
