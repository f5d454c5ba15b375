"""CLIP scoring: cosine per pair, N x M matrices, per-sample CLIPScore, reranking.

The maths is a set of pure tensor functions; :class:`CLIPScorer` adds batching, a text
embedding cache and input handling around any CLIP that :func:`clipguide.load_clip` returns.
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from PIL import Image

from clipguide.model.images import ImageInput, as_image_list
from clipguide.model.text_cache import cached_text_embeds, model_key, resolve_cache

__all__ = [
    "CLIPSCORE_SCALE",
    "HESSEL_SCALE",
    "cosine",
    "cosine_matrix",
    "clip_score",
    "rank",
    "Ranking",
    "RobustScores",
    "ROBUST_VIEWS",
    "robust_view",
    "CLIPScorer",
]

CLIPSCORE_SCALE = 100.0
"""The scale torchmetrics' ``CLIPScore`` uses. torchmetrics computes ``100 * cos`` per sample and
clamps only the batch mean, ``max(mean(100 * cos), 0)``; :func:`clip_score` clamps each sample,
``100 * max(cos, 0)`` (Hessel et al.), so the two agree whenever no cosine is negative."""
HESSEL_SCALE = 2.5
"""Hessel et al. 2021, "CLIPScore", eq. 1: w = 2.5."""
ROBUST_VIEWS = ("jpeg", "crop", "grayscale")


class _ClipLike(Protocol):
    name: str
    context_length: int

    def tokenize(self, prompts: list[str], *, warn: bool = True) -> torch.Tensor: ...

    def encode_image(self, images: Any) -> torch.Tensor: ...

    def encode_text(self, prompts: Any) -> Any: ...


def _normalise(x: torch.Tensor) -> torch.Tensor:
    x = x.float()
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def cosine(image_embeds: torch.Tensor, text_embeds: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of each pair of rows, in fp32: (N, D), (N, D) or (D,) -> (N,)."""
    if image_embeds.ndim != 2 or text_embeds.ndim not in (1, 2):
        raise ValueError(
            f"image_embeds must be (N, D) and text_embeds (N, D) or (D,), got shapes "
            f"{tuple(image_embeds.shape)} and {tuple(text_embeds.shape)}"
        )
    if text_embeds.ndim == 2 and text_embeds.shape[0] not in (1, image_embeds.shape[0]):
        raise ValueError(
            f"text_embeds must have 1 or N={image_embeds.shape[0]} rows, got {text_embeds.shape[0]}"
        )
    return (_normalise(image_embeds) * _normalise(text_embeds)).sum(dim=-1)


def cosine_matrix(image_embeds: torch.Tensor, text_embeds: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of every image with every text, in fp32: (N, D), (M, D) -> (N, M)."""
    if image_embeds.ndim != 2 or text_embeds.ndim != 2:
        raise ValueError(
            f"image_embeds and text_embeds must be 2-D (N, D) and (M, D), got shapes "
            f"{tuple(image_embeds.shape)} and {tuple(text_embeds.shape)}"
        )
    return _normalise(image_embeds) @ _normalise(text_embeds).T


def clip_score(cos: torch.Tensor, scale: float = CLIPSCORE_SCALE) -> torch.Tensor:
    """CLIPScore per sample, ``scale * max(cos, 0)`` (Hessel et al. 2021; clamped per sample,
    where torchmetrics clamps the batch mean)."""
    if scale <= 0:
        raise ValueError(f"scale must be positive (100 or {HESSEL_SCALE}), got {scale}")
    return scale * cos.float().clamp_min(0.0)


@dataclass(frozen=True)
class Ranking:
    """Indices into the ranked inputs, best first, and their scores in the same order."""

    indices: list[int]
    scores: torch.Tensor


def rank(scores: torch.Tensor) -> Ranking:
    """Sort scores best first; ties keep input order (lower index first), NaN goes last."""
    if scores.ndim != 1:
        raise ValueError(f"scores must be 1-D, got shape {tuple(scores.shape)}")
    values = scores.detach().float().cpu()
    keys = torch.nan_to_num(values, nan=-float("inf"))
    order = torch.sort(keys, descending=True, stable=True).indices
    return Ranking(indices=order.tolist(), scores=scores[order.to(scores.device)])


@dataclass(frozen=True)
class RobustScores:
    """Scores of the clean images and of each perturbed view (JPEG, crop, grayscale)."""

    clean: torch.Tensor
    jpeg: torch.Tensor
    crop: torch.Tensor
    grayscale: torch.Tensor

    @property
    def worst(self) -> torch.Tensor:
        """The lowest score of each image over the clean image and all views."""
        return torch.stack([self.clean, self.jpeg, self.crop, self.grayscale]).amin(dim=0)

    def as_dict(self) -> dict[str, torch.Tensor]:
        return {
            "clean": self.clean,
            "jpeg": self.jpeg,
            "crop": self.crop,
            "grayscale": self.grayscale,
        }


def _to_pil(item: Image.Image | torch.Tensor) -> Image.Image:
    if isinstance(item, Image.Image):
        return item
    array = (item.detach().float().clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu()
    return Image.fromarray(array.numpy(), mode="RGB")


def robust_view(image: Image.Image | torch.Tensor, view: str) -> Image.Image:
    """Perturb an RGB image: ``jpeg`` (quality 75), ``crop`` (centre 90% resized back), ``grayscale``."""
    pil = _to_pil(image)
    if view == "jpeg":
        buffer = io.BytesIO()
        pil.save(buffer, format="JPEG", quality=75)
        buffer.seek(0)
        with Image.open(buffer) as decoded:
            return decoded.convert("RGB")
    if view == "crop":
        width, height = pil.size
        w, h = max(1, round(0.9 * width)), max(1, round(0.9 * height))
        left, top = (width - w) // 2, (height - h) // 2
        return pil.crop((left, top, left + w, top + h)).resize((width, height), Image.BICUBIC)
    if view == "grayscale":
        return pil.convert("L").convert("RGB")
    raise ValueError(f"view must be one of {ROBUST_VIEWS}, got {view!r}")


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class CLIPScorer:
    """Score images against prompts with a CLIP (any model :func:`clipguide.load_clip` loads).

    Args:
        clip: the judge; needs ``encode_image``, ``encode_text(...).embeds`` and ``tokenizer``.
        batch_size: images per vision-tower forward.
        scale: CLIPScore scale, 100 (torchmetrics' scale) or :data:`HESSEL_SCALE` (Hessel et
            al.); scores are clamped per sample (see :data:`CLIPSCORE_SCALE`).
        cache: text-embedding cache: True for the shared :data:`clipguide.model.text_cache.TEXT_CACHE`
            (keyed by the text tower's state and token ids, see :mod:`clipguide.model.text_cache`),
            False for none, or a ``TextEncodingCache``.
        cache_size: size of the per-scorer LRU used instead when the clip has no transformers
            ``text_model`` (duck-typed models), keyed by prompt and by the state
            (:func:`clipguide.model.text_cache.model_key`) of every ``torch.nn.Module`` the clip is or
            holds as an attribute; a clip holding no module is keyed by prompt alone. 0 turns
            off all text caching, the shared cache included (as ``cache=False``).
        progress: show a tqdm bar while encoding images.
        workers: threads decoding files and preprocessing images (resize, crop, normalise),
            one batch ahead of the vision tower; default ``min(4, cpu_count)``.
    """

    def __init__(
        self,
        clip: _ClipLike,
        *,
        batch_size: int = 32,
        scale: float = CLIPSCORE_SCALE,
        cache: Any = True,
        cache_size: int = 4096,
        progress: bool = False,
        workers: int | None = None,
    ) -> None:
        for attr in ("encode_image", "encode_text"):
            if not callable(getattr(clip, attr, None)):
                raise TypeError(
                    f"clip must be a CLIP from clipguide.load_clip (with {attr}), "
                    f"got {type(clip).__name__}"
                )
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        if isinstance(cache_size, bool) or not isinstance(cache_size, int) or cache_size < 0:
            raise ValueError(f"cache_size must be an int >= 0, got {cache_size!r}")
        if isinstance(scale, bool) or not isinstance(scale, (int, float)):
            raise TypeError(f"scale must be a number (100 or {HESSEL_SCALE}), got {scale!r}")
        clip_score(torch.zeros(1), scale)  # validates scale
        store = resolve_cache(cache)  # validates cache
        self.clip = clip
        self.batch_size = batch_size
        self.scale = float(scale)
        self.progress = progress
        if workers is not None and (not isinstance(workers, int) or workers < 1):
            raise ValueError(f"workers must be a positive int or None, got {workers!r}")
        self.workers = workers or min(4, os.cpu_count() or 1)
        if cache_size == 0:
            store = None
        self._shared_cache = store if store is not None else False
        self._cache_size = cache_size if store is not None else 0
        self._cache: OrderedDict[tuple, torch.Tensor] = OrderedDict()

    # -- text -------------------------------------------------------------------------------
    def _warn_if_long(self, prompts: Sequence[str]) -> None:
        tokenizer = getattr(self.clip, "tokenizer", None)
        limit = getattr(self.clip, "context_length", None)
        if tokenizer is None or limit is None:
            return
        try:  # verbose=False: transformers' own "longer than" log line would duplicate ours
            ids = tokenizer(list(prompts), verbose=False)["input_ids"]
        except TypeError:
            ids = tokenizer(list(prompts))["input_ids"]
        lengths = [len(row) for row in ids]
        too_long = [(p, n) for p, n in zip(prompts, lengths, strict=True) if n > limit]
        if too_long:
            prompt, n = too_long[0]
            warnings.warn(
                f"{len(too_long)} prompt(s) longer than the {limit}-token context were truncated "
                f"keeping the end token (e.g. {n} tokens: {prompt[:60]!r}...)",
                UserWarning,
                stacklevel=3,
            )

    def _tokenize(self, prompts: list[str]) -> Any:
        """Token ids without the model's own warning (this class warns once per call)."""
        tokenize = getattr(self.clip, "tokenize", None)
        return tokenize(prompts, warn=False) if tokenize is not None else prompts

    def embed_texts(self, prompts: str | Sequence[str]) -> torch.Tensor:
        """Normalised fp32 text embeddings (M, D), cached per prompt."""
        prompts = _prompt_list(prompts, "prompts")
        unique = list(dict.fromkeys(prompts))
        self._warn_if_long(unique)
        if isinstance(getattr(self.clip, "text_model", None), torch.nn.Module):
            table = cached_text_embeds(self.clip, self._tokenize(unique), cache=self._shared_cache)
            found = dict(zip(unique, table, strict=True))
            return _normalise(torch.stack([found[p] for p in prompts]))
        state = self._clip_state() if self._cache_size else ()
        found = {p: self._cache[(state, p)] for p in unique if (state, p) in self._cache}
        for p in found:
            self._cache.move_to_end((state, p))
        missing = [p for p in unique if p not in found]
        if missing:
            with torch.no_grad():
                embeds = self.clip.encode_text(self._tokenize(missing)).embeds.float()
            for prompt, embed in zip(missing, embeds, strict=True):
                found[prompt] = embed
                self._remember((state, prompt), embed)
        return _normalise(torch.stack([found[p] for p in prompts]))

    def _clip_state(self) -> tuple:
        """model_key of every module the (duck-typed) clip is or holds as an attribute."""
        clip = self.clip
        found = [clip] if isinstance(clip, torch.nn.Module) else []
        found += [
            v for v in getattr(clip, "__dict__", {}).values() if isinstance(v, torch.nn.Module)
        ]
        return tuple(model_key(m) for m in found)

    def _remember(self, key: tuple, embed: torch.Tensor) -> None:
        if self._cache_size == 0:
            return
        self._cache[key] = embed.detach()
        self._cache.move_to_end(key)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    # -- images -----------------------------------------------------------------------------
    def embed_images(self, images: ImageInput) -> torch.Tensor:
        """Normalised fp32 image embeddings (N, D), encoded in batches of ``batch_size``.

        The next batch is preprocessed by ``workers`` threads while the vision tower runs.
        """
        lazy = isinstance(images, (list, tuple)) and all(
            isinstance(i, (str, os.PathLike)) for i in images
        )
        items = list(images) if lazy else as_image_list(images)  # files: decoded by the workers
        if not items:
            raise ValueError("images is empty; pass at least one image")
        batches = list(_chunks(items, self.batch_size))
        bar = None
        if self.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(items), unit="img", desc="encoding images")
        split = callable(getattr(self.clip, "pixel_values", None)) and callable(
            getattr(self.clip, "image_features", None)
        )
        out = []
        # a CLIP made from a pipeline works where the pipeline executes (see CLIP.working)
        working = getattr(self.clip, "working", None)
        placed = working() if callable(working) else contextlib.nullcontext()
        with torch.no_grad(), placed, ThreadPoolExecutor(max_workers=self.workers) as pool:
            if split:
                pending = self._submit(pool, batches[0])
            for k, batch in enumerate(batches):
                if split:
                    pixels = torch.cat([job.result() for job in pending])
                    if k + 1 < len(batches):
                        pending = self._submit(pool, batches[k + 1])
                    out.append(self.clip.image_features(pixels).float())
                else:
                    out.append(self.clip.encode_image(as_image_list(list(batch))).float())
                if bar is not None:
                    bar.update(len(batch))
        if bar is not None:
            bar.close()
        return _normalise(torch.cat(out))

    def _submit(self, pool: ThreadPoolExecutor, batch: Sequence[Any]) -> list[Future]:
        """Preprocess ``batch`` in up to ``workers`` slices, concurrently."""
        step = -(-len(batch) // self.workers)
        return [pool.submit(self._pixels, batch[i : i + step]) for i in range(0, len(batch), step)]

    def _pixels(self, batch: Sequence[Any]) -> torch.Tensor:
        with torch.no_grad():  # grad mode is per thread
            return self.clip.pixel_values(list(batch))  # decodes files, if any

    # -- scores -----------------------------------------------------------------------------
    def cosine(self, images: ImageInput, prompts: str | Sequence[str]) -> torch.Tensor:
        """Cosine of each image with its prompt (one prompt for all, or one per image): (N,)."""
        image_embeds = self.embed_images(images)
        text_embeds = self.embed_texts(prompts).to(image_embeds.device)
        if text_embeds.shape[0] not in (1, image_embeds.shape[0]):
            raise ValueError(
                f"prompts must be one string or one per image ({image_embeds.shape[0]}), "
                f"got {text_embeds.shape[0]}"
            )
        return cosine(image_embeds, text_embeds)

    def matrix(self, images: ImageInput, prompts: str | Sequence[str]) -> torch.Tensor:
        """Cosine of every image with every prompt: (N, M)."""
        image_embeds = self.embed_images(images)
        return cosine_matrix(image_embeds, self.embed_texts(prompts).to(image_embeds.device))

    def score(self, images: ImageInput, prompts: str | Sequence[str]) -> torch.Tensor:
        """CLIPScore per image, ``scale * max(cos, 0)``: (N,)."""
        return clip_score(self.cosine(images, prompts), self.scale)

    def rerank(self, images: ImageInput, prompt: str) -> Ranking:
        """Rank images against one prompt, best first (ties: lower index first)."""
        if not isinstance(prompt, str):
            raise TypeError(f"prompt must be a str, got {type(prompt).__name__}: {prompt!r:.80}")
        return rank(self.score(images, prompt))

    def robust_scores(self, images: ImageInput, prompts: str | Sequence[str]) -> RobustScores:
        """Scores of the images and of their JPEG-75, 0.9-crop and grayscale views."""
        items = as_image_list(images)
        views = {v: [robust_view(item, v) for item in items] for v in ROBUST_VIEWS}
        return RobustScores(
            clean=self.score(items, prompts), **{v: self.score(views[v], prompts) for v in views}
        )


def _prompt_list(prompts: str | Sequence[str], name: str) -> list[str]:
    if isinstance(prompts, str):
        return [prompts]
    if isinstance(prompts, Sequence) and prompts and all(isinstance(p, str) for p in prompts):
        return list(prompts)
    raise TypeError(f"{name} must be a str or a non-empty list of str, got {prompts!r:.80}")
