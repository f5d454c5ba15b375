"""Ways to move objects into their layout boxes, tried on the micro world's dev split
(issue 19, item 5); ``regions_quality.py`` measures them.

- :class:`BoxGuidance`: the product's CLIP guidance, given a layout: in the first steps each
  box's window view (:func:`clipguide.scoring.structure.window_views`, the views the
  ``structured`` score reads) of the tiny decoder's image is pulled toward that box's phrase.
- :func:`choose_noise`: of ``k`` starting noises, keep the one whose early predicted x0,
  after a few regional steps, already shows each box's phrase in its box (same window views,
  the guide CLIP, no gradients).
"""

from __future__ import annotations

from typing import Any

import torch

from clipguide import CLIPGuidance
from clipguide.guidance.decode import decode_latents, decoder_ready
from clipguide.guidance.loss import spherical_distance
from clipguide.scoring.metrics import cosine
from clipguide.scoring.structure import window_views

__all__ = ["BoxGuidance", "box_pixels", "choose_noise", "PROBE_SEED_STRIDE"]

PROBE_SEED_STRIDE = 10_000_000  # probe noises: seed + k * stride, far from every split's seeds


def box_pixels(boxes, height: int, width: int) -> list[tuple[int, int, int, int]]:
    """Fraction boxes ``(x0, y0, x1, y1)`` as ``(top, left, h, w)`` pixels (at least 1)."""
    out = []
    for x0, y0, x1, y1 in boxes:
        top, left = round(y0 * height), round(x0 * width)
        out.append((top, left, max(1, round(y1 * height) - top), max(1, round(x1 * width) - left)))
    return out


class BoxGuidance(CLIPGuidance):
    """CLIP guidance toward each box's phrase inside its box (window views of the image)."""

    def __init__(self, clip: Any, layout: Any, **kwargs: Any) -> None:
        super().__init__(clip, **kwargs)
        self.layout = layout
        self._phrases = [r.prompt for r in layout.regions]

    def _box_embeds(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B * K, D) features of every image's K box views, and the (B * K, D) targets."""
        h, w = images.shape[-2:]
        boxes = box_pixels(self.layout.boxes, h, w)
        views = torch.cat([window_views(im, boxes) for im in images])
        vision = self.clip.vision_model
        pixels = self.clip.preprocess.from_tensor(views).to(vision.device, vision.dtype)
        feats = self.clip.image_features(pixels).float()
        text = torch.nn.functional.normalize(self._encode_texts(self._phrases), dim=-1)
        return feats, text.to(feats.device).repeat(images.shape[0], 1)

    def _distance(self, images: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, ...]:
        feats, text = self._box_embeds(images)
        k = len(self._phrases)
        dist = spherical_distance(feats, text).view(-1, k).mean(1)
        sim = cosine(feats, text).view(-1, k).mean(1)
        return dist, sim


@torch.no_grad()
def box_agreement(clip: Any, images: torch.Tensor, layout: Any) -> torch.Tensor:
    """(B,) the least-found box phrase's cosine in its own box's window view."""
    h, w = images.shape[-2:]
    boxes = box_pixels(layout.boxes, h, w)
    views = torch.cat([window_views(im, boxes) for im in images])
    feats = clip.encode_image(list(views))
    from clipguide.model.text_cache import cached_text_embeds

    text = cached_text_embeds(clip, [r.prompt for r in layout.regions]).float()
    sims = cosine(feats.float(), text.to(feats.device).repeat(images.shape[0], 1))
    return sims.view(images.shape[0], -1).amin(dim=1)


def choose_noise(
    pipe: Any,
    prompt: str,
    seed: int,
    layout: Any,
    attach: Any,
    ctx: dict,
    *,
    k: int = 4,
    probe_steps: int = 4,
) -> int:
    """The seed among ``seed + j * PROBE_SEED_STRIDE`` (j < k) whose predicted x0 after
    ``probe_steps`` regional steps best shows each box's phrase in its box (Euler x0 from two
    consecutive latents)."""
    seeds = [seed + j * PROBE_SEED_STRIDE for j in range(k)]
    seen: dict[int, torch.Tensor] = {}

    def grab(p, i, t, kwargs):
        seen[i] = kwargs["latents"].clone()
        if i + 1 >= probe_steps:
            p._interrupt = True
        return kwargs

    with attach():
        pipe(
            prompt=[prompt] * k,
            num_inference_steps=ctx["steps"],
            guidance_scale=ctx["cfg"],
            generator=[torch.Generator("cpu").manual_seed(s) for s in seeds],
            output_type="latent",
            callback_on_step_end=grab,
        )
    sigmas = pipe.scheduler.sigmas
    i = probe_steps - 1  # x_i (after step i-1) and x_{i+1} (after step i)
    before, after = seen[i - 1], seen[i]
    x0 = before - sigmas[i] * (after - before) / (sigmas[i + 1] - sigmas[i])
    with decoder_ready(ctx["tiny_decoder"], x0.device) as ready:
        images = decode_latents(ready, x0)
    scores = box_agreement(ctx["guide_clip"], images, layout)
    return seeds[int(scores.argmax())]
