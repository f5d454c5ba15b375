"""Selection scores: how :class:`~clipguide.scoring.scorer.CLIPScorer` ranks a prompt's images.

Every method is a plain function of (images, prompt) through one CLIP (any CLIP: windows and
shifts are made in image space, then go through the CLIP's own preprocessing), so best-of-N,
reranking or a steering loop can call it alike. Scores compare images *of one prompt* under
one method; they are not CLIPScores (``CLIPScorer.score`` stays the plain CLIPScore).

- ``"clipscore"``: plain CLIPScore, ``scale * max(cos, 0)``.
- ``"contrastive"``: log-probability of the prompt in a softmax (at the CLIP's logit scale)
  over the prompt and its hard negatives (:func:`~clipguide.scoring.captions.hard_negatives`).
- ``"parts"``: whole-prompt cosine plus the least similar object phrase's cosine.
- ``"views"``: cosine of the mean embedding of four views shifted by 1/32 of the side.
- ``"structured"``: whole-prompt cosine plus the object phrases found in window views
  (:func:`~clipguide.scoring.structure.part_presence`), their spatial relations and counts
  (:mod:`clipguide.scoring.structure`; counts only for prompts with a number word), minus
  the negated phrases found ("no blue square"), weighted by :class:`StructureWeights`; given
  the layouts the candidates were drawn on (best-of-N across layouts), also how well each
  image's boxes show their phrases (:func:`~clipguide.scoring.structure.layout_agreement`,
  the best of the layouts).

Negations: every method but ``"clipscore"`` compares images with the *positive* prompt, its
negated phrases and their negators removed (:func:`~clipguide.scoring.captions.positive_prompt`:
"a red circle, no blue square" -> "a red circle"), since CLIP reads "no blue square" as "blue
square". Non-square images: every method but ``"clipscore"`` letterboxes each image and view to
a square with its border colour (:func:`~clipguide.scoring.structure.letterbox`) before the
CLIP's preprocessing, whose centre crop would otherwise hide the sides of a wide image (21 % of
each side at 1344x768); ``"clipscore"`` is CLIPScore as open_clip and torchmetrics compute it,
centre crop included, equal to ``CLIPScorer.score``.

Fallback: a prompt that gives a method nothing to work with (no hard negative; fewer than two
object phrases, no relation between objects, no number and no negated phrase) is scored by
its plain cosine.
Non-plain scores are reported as ``scale * value`` (100x, like CLIPScore) without the clamp.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F

from clipguide.checks import checked_box
from clipguide.model.images import ImageInput, as_image_list, to_tensor
from clipguide.scoring.captions import (
    hard_negatives,
    negated_parts,
    noun_phrases,
    plain_prompt,
    positive_prompt,
    prompt_parts,
)
from clipguide.scoring.captions.relations import relations
from clipguide.scoring.method_names import METHODS
from clipguide.scoring.metrics import normalise
from clipguide.scoring.structure import (
    border_fill,
    box_centres,
    count_agreement,
    fraction_box,
    layout_agreement,
    letterbox,
    part_presence,
    relation_agreement,
    relation_axis,
    window_boxes,
    window_views,
)


class _Scorer(Protocol):
    """What the methods use of :class:`clipguide.scoring.scorer.CLIPScorer`."""

    clip: Any
    scale: float

    def embed_images(self, images: ImageInput) -> torch.Tensor: ...

    def embed_texts(self, prompts: str | Sequence[str]) -> torch.Tensor: ...

    def score(self, images: ImageInput, prompts: str | Sequence[str]) -> torch.Tensor: ...


__all__ = [
    "METHODS",
    "StructureTerms",
    "StructureWeights",
    "check_method",
    "layout_boxes",
    "selection_scores",
    "structure_terms",
]

MAX_SIDE = 512  # images are cut into views at most this large (CLIPs see 224-448 pixels)
_DEFAULT_LOGIT_SCALE = 100.0


@dataclass(frozen=True)
class StructureWeights:
    """Weights of the ``"structured"`` score's terms (chosen on the dev split).

    Attributes:
        parts: weight of the least-found object phrase's best window cosine.
        relations: weight of the mean relation agreement (in [-1, 1]).
        counts: weight of the count log-probability.
        negated: weight of the penalty for a negated phrase ("no blue square") found: the
            most-found negated phrase's best window cosine is subtracted (0.5: chosen on the
            dev split by ``benchmarks/negation.py``).
        tau: softmax temperature locating a phrase among windows (cosine units).
        offset: image fraction at which a relation's agreement reaches tanh(1).
        count_scale: logit scale of the count softmax.
        layouts: weight of the layout agreement, used only when the layouts the candidates
            were drawn on are given (0.3: chosen on the dev split by
            ``benchmarks/regions_quality.py``, flat from 0.2 to 0.6).
    """

    parts: float = 1.0
    relations: float = 0.3
    counts: float = 0.1
    negated: float = 0.5
    tau: float = 0.03
    offset: float = 0.125
    count_scale: float = 50.0
    layouts: float = 0.3

    def __post_init__(self) -> None:
        for name in (*_WEIGHTS, "tau", "offset", "count_scale"):
            value = getattr(self, name)
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            if (
                not ok
                or not math.isfinite(value)
                or value < 0
                or (name in _POSITIVE and value == 0)
            ):
                accepted = "> 0" if name in _POSITIVE else ">= 0"
                raise ValueError(
                    f"{name}={value!r} is not valid; accepted: a finite number {accepted}"
                )


_WEIGHTS = ("parts", "relations", "counts", "negated", "layouts")
_POSITIVE = ("tau", "offset", "count_scale")


def check_method(method: object, name: str = "method") -> str:
    """``method`` if it is one of :data:`METHODS`, else a ValueError naming it."""
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(
            f"{name}={method!r} is not a scoring method; accepted: {', '.join(METHODS)}"
        )
    return method


def selection_scores(
    scorer: _Scorer,
    images: ImageInput,
    prompt: str,
    method: str = "clipscore",
    weights: StructureWeights | None = None,
    layouts: Sequence[Any] | None = None,
) -> torch.Tensor:
    """(N,) selection scores of ``images`` for one ``prompt`` by ``method`` (see the module).

    ``layouts``: the layouts the images were drawn on (``"structured"`` only), each a
    :class:`~clipguide.conditioning.Layout` or a list of ``(phrase, (x0, y0, x1, y1))``."""
    check_method(method)
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a str, got {type(prompt).__name__}: {prompt!r:.80}")
    boxes = layout_boxes(layouts)
    if boxes and method != "structured":
        raise ValueError(
            f"layouts are read only by method='structured', got method={method!r} with "
            f"{len(boxes)} layout(s); pass method='structured' or no layouts"
        )
    items = as_image_list(images)
    if not items:
        raise ValueError("images is empty; pass at least one image")
    if method == "clipscore":
        return scorer.score(items, prompt)
    if method == "views":
        return scorer.scale * _views_cosine(scorer, items, _positive(prompt))
    if method == "structured":
        weights = weights or StructureWeights()
        terms = structure_terms(scorer, items, prompt, weights, layouts=boxes)
        whole, extra = terms.whole, terms.combine(weights)
    else:
        text = _positive(prompt)
        embeds = scorer.embed_images(_squared(items))
        whole = embeds @ scorer.embed_texts(text).to(embeds)[0]
        if method == "contrastive":
            extra = _contrastive(scorer, embeds, text)
        else:
            extra = _parts(scorer, embeds, text, whole)
    return scorer.scale * (whole if extra is None else extra)


def _positive(prompt: str) -> str:
    """The plain prompt without negated phrases ("a red circle, no blue square" -> "a red
    circle"), what the non-plain methods compare images with; the plain prompt when nothing
    is left ("no people")."""
    plain = plain_prompt(prompt) or prompt
    return positive_prompt(plain) or plain


def _logit_scale(scorer: _Scorer) -> float:
    value = getattr(scorer.clip, "logit_scale", None)
    return float(value) if value else _DEFAULT_LOGIT_SCALE


def _contrastive(scorer: _Scorer, embeds: torch.Tensor, text: str) -> torch.Tensor | None:
    negatives = [n.text for n in hard_negatives(text)]
    if not negatives:
        return None
    texts = scorer.embed_texts([text, *negatives]).to(embeds)
    return torch.log_softmax(_logit_scale(scorer) * embeds @ texts.T, dim=1)[:, 0]


def _parts(
    scorer: _Scorer, embeds: torch.Tensor, text: str, whole: torch.Tensor
) -> torch.Tensor | None:
    """``whole`` (the images' cosines with ``text``) plus the least similar part's cosine."""
    parts = prompt_parts(text)
    if not parts:
        return None
    return whole + (embeds @ scorer.embed_texts(parts).to(embeds).T).amin(dim=1)


def _pixels(items: list) -> list[torch.Tensor]:
    """Float CHW tensors in [0, 1], at most :data:`MAX_SIDE` on their longer side."""
    out = []
    for item in items:
        x = to_tensor(item).detach().float()
        side = max(x.shape[-2:])
        if side > MAX_SIDE:
            size = [max(1, round(s * MAX_SIDE / side)) for s in x.shape[-2:]]
            x = F.interpolate(x[None], size=size, mode="bilinear", antialias=True)[0].clamp(0, 1)
        out.append(x)
    return out


def _squared(items: list, pixels: list[torch.Tensor] | None = None) -> list:
    """The images as selection methods show them to the CLIP: square ones as given, others
    letterboxed with their border colour (float tensors from :func:`_pixels`), so that the
    CLIP's centre crop keeps all of them."""
    out = []
    for k, item in enumerate(items):
        x = pixels[k] if pixels is not None else to_tensor(item)
        if x.shape[-1] == x.shape[-2]:
            out.append(item)
        else:
            x = pixels[k] if pixels is not None else _pixels([item])[0]
            out.append(letterbox(x, border_fill(x)))
    return out


def _views_cosine(scorer: _Scorer, items: list, prompt: str) -> torch.Tensor:
    shifted = []
    for x in _pixels(items):
        x = letterbox(x, border_fill(x))
        d = max(1, round(max(x.shape[-2:]) / 32))
        shifted += [torch.roll(x, s, dims=dim) for s, dim in ((d, 1), (-d, 1), (d, 2), (-d, 2))]
    embeds = scorer.embed_images(shifted).view(len(items), 4, -1).mean(dim=1)
    text = scorer.embed_texts(prompt).to(embeds)
    return normalise(embeds) @ text[0]


@dataclass(frozen=True)
class StructureTerms:
    """The ``"structured"`` score's terms for N images of one prompt, each (N,) or None when
    the prompt has nothing for that term: ``score = whole + sum(weight * term)``."""

    whole: torch.Tensor
    parts: torch.Tensor | None = None
    relations: torch.Tensor | None = None
    counts: torch.Tensor | None = None
    negated: torch.Tensor | None = None
    layouts: torch.Tensor | None = None

    def combine(self, w: StructureWeights) -> torch.Tensor | None:
        """The weighted sum (the negated term subtracted), or None when no term applies (the
        plain-cosine fallback)."""
        terms = [(w.parts, self.parts), (w.relations, self.relations), (w.counts, self.counts)]
        terms.append((w.layouts, self.layouts))
        if self.negated is not None:
            terms.append((w.negated, -self.negated))
        used = [(weight, term) for weight, term in terms if weight and term is not None]
        if not used:
            return None
        return self.whole + sum(weight * term for weight, term in used)


def structure_terms(
    scorer: _Scorer,
    images: ImageInput,
    prompt: str,
    w: StructureWeights | None = None,
    layouts: Sequence[Any] | None = None,
) -> StructureTerms:
    """Each term of the ``"structured"`` score (``w`` gives tau, offset, count_scale; a zero
    weight skips its term's work); ``layouts`` as :func:`selection_scores` takes them."""
    w = w or StructureWeights()
    items = as_image_list(images)
    boxes = layout_boxes(layouts) if w.layouts else []
    text = _positive(prompt)
    parts = prompt_parts(text) if w.parts else []
    rels = (
        [r for r in relations(text) if relation_axis(r.relation) is not None] if w.relations else []
    )
    counts = _count_variants(text) if w.counts else []
    negs = negated_parts(prompt) if w.negated else []
    pixels = _pixels(items) if parts or rels or negs or boxes else None
    embeds = scorer.embed_images(_squared(items, pixels))
    prompt_embed = scorer.embed_texts(text).to(embeds)[0]
    out = {"whole": embeds @ prompt_embed}
    if counts:
        variants = scorer.embed_texts(counts).to(embeds)
        out["counts"] = count_agreement(embeds, prompt_embed, variants, w.count_scale)
    if parts or rels or negs:
        phrases = list(dict.fromkeys(parts + [p for r in rels for p in (r.subject, r.object)]))
        phrases += negs  # never an object phrase: no overlap
        assert pixels is not None
        sims = _window_sims(scorer, pixels, scorer.embed_texts(phrases))  # (N, windows, K)
        if parts:
            out["parts"] = part_presence(sims[..., : len(parts)])
        if negs:
            out["negated"] = sims[..., len(phrases) - len(negs) :].amax(dim=(1, 2))
        if rels:
            h, w_ = pixels[0].shape[-2:]  # window centres: fractions, any size
            centres = box_centres(window_boxes(h, w_), h, w_)
            column = {p: k for k, p in enumerate(phrases)}
            agree = [
                relation_agreement(
                    sims[..., column[r.subject]],
                    sims[..., column[r.object]],
                    centres,
                    r.relation,
                    tau=w.tau,
                    scale=w.offset,
                )  # fmt: skip
                for r in rels
            ]
            out["relations"] = torch.stack(agree).mean(dim=0)
    if boxes:
        assert pixels is not None
        out["layouts"] = _layout_term(scorer, pixels, boxes)
    return StructureTerms(**out)


def layout_boxes(layouts: Sequence[Any] | None) -> list[list[tuple[str, tuple]]]:
    """Each layout as ``[(plain phrase, (x0, y0, x1, y1)), ...]``, from
    :class:`~clipguide.conditioning.Layout` objects (a masked region by its mask's bounding
    box) or such lists; a ValueError naming the layout for anything else."""
    if layouts is None:
        return []
    if isinstance(layouts, (str, bytes)) or not isinstance(layouts, Sequence):
        raise TypeError(
            f"layouts must be a list of Layout or of [(phrase, (x0, y0, x1, y1)), ...], "
            f"got {type(layouts).__name__}: {layouts!r:.80}"
        )
    out = []
    for i, layout in enumerate(layouts):
        regions = getattr(layout, "regions", layout)
        pairs = []
        try:
            for region in regions:
                if hasattr(region, "prompt"):
                    phrase, box = region.prompt, region.box
                    if box is None:
                        box = _mask_box(region.mask)
                else:
                    phrase, box = region
                if not isinstance(phrase, str) or not phrase.strip():
                    raise ValueError(f"phrase {phrase!r} is not a non-empty str")
                pairs.append((plain_prompt(phrase) or phrase, checked_box(box)))
        except (TypeError, ValueError) as err:
            raise ValueError(
                f"layouts[{i}]={layout!r:.120} is not a layout: {err}; accepted: a Layout or a "
                "list of (phrase, (x0, y0, x1, y1)) with boxes in fractions of the image"
            ) from None
        if not pairs:
            raise ValueError(f"layouts[{i}] has no boxes; accepted: at least one box")
        out.append(pairs)
    return out


def _mask_box(mask: torch.Tensor) -> tuple[float, float, float, float]:
    """The bounding box, in fractions, of a mask's cells above one half."""
    on = torch.nonzero(torch.as_tensor(mask) > 0.5)
    if on.numel() == 0:
        raise ValueError("its mask is empty")
    h, w = mask.shape[-2:]
    (y0, x0), (y1, x1) = on.amin(dim=0).tolist(), on.amax(dim=0).tolist()
    return x0 / w, y0 / h, (x1 + 1) / w, (y1 + 1) / h


def _layout_term(
    scorer: _Scorer, pixels: list[torch.Tensor], layouts: list[list[tuple[str, tuple]]]
) -> torch.Tensor:
    """(N,) the best over ``layouts`` of :func:`layout_agreement`: each box's window view
    (and the empty view) against the layout's distinct phrases."""
    best = None
    for layout in layouts:
        phrases = list(dict.fromkeys(p for p, _ in layout))
        text = scorer.embed_texts(phrases)
        views = []
        for x in pixels:
            h, w = x.shape[-2:]
            fill = border_fill(x)
            boxed = window_views(x, [fraction_box(b, h, w) for _, b in layout])
            empty = fill.expand(1, *x.shape)
            views.extend(letterbox(torch.cat([boxed, empty]), fill))
        embeds = scorer.embed_images(views).view(len(pixels), len(layout) + 1, -1)
        sims = embeds @ text.to(embeds).T  # (N, R + 1, K)
        columns = [phrases.index(p) for p, _ in layout]
        agree = layout_agreement(sims[:, :-1], sims[:, -1], columns)
        best = agree if best is None else torch.maximum(best, agree)
    assert best is not None
    return best


def _count_variants(text: str) -> list[str]:
    """The prompt with one number moved by one, when it has a number word ("a" is not one)."""
    if not any("num" in np.roles for np in noun_phrases(text) if np.is_object):
        return []
    return [n.text for n in hard_negatives(text, kinds=("change_count",))]


def _window_sims(
    scorer: _Scorer, pixels: list[torch.Tensor], phrase_embeds: torch.Tensor
) -> torch.Tensor:
    """(N, windows, K) cosines of every window view of N images (from :func:`_pixels`) with
    K phrases."""
    views = [
        letterbox(window_views(x, window_boxes(*x.shape[-2:])), border_fill(x)) for x in pixels
    ]
    flat = [v for per_image in views for v in per_image]  # sizes may differ between images
    embeds = scorer.embed_images(flat).view(len(pixels), views[0].shape[0], -1)
    return embeds @ phrase_embeds.to(embeds).T
