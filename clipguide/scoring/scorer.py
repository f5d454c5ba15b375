"""CLIPScorer: the scoring maths (:mod:`.metrics`) around any CLIP that
:func:`clipguide.load_clip` returns, with batching, a text-embedding cache and image inputs."""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Sequence
from typing import Any, Protocol

import torch

from clipguide.model.images import ImageInput, as_image_list
from clipguide.model.text_cache import (
    HeldKeys,
    TextEncodingCache,
    cached_text_embeds,
    model_key,
    resolve_cache,
)
from clipguide.model.text_cache import hold_keys as keys_held
from clipguide.scoring.batches import batched, prefetched
from clipguide.scoring.captions.parse import plain_prompt
from clipguide.scoring.methods import StructureWeights, check_method, selection_scores
from clipguide.scoring.metrics import (
    CLIPSCORE_SCALE,
    HESSEL_SCALE,
    Ranking,
    clip_score,
    cosine,
    cosine_matrix,
    normalise,
    rank,
)
from clipguide.scoring.robust import ROBUST_VIEWS, RobustScores, robust_view

__all__ = ["CLIPScorer"]


class _ClipLike(Protocol):
    name: str
    context_length: int

    def tokenize(self, prompts: list[str], *, warn: bool = True) -> torch.Tensor: ...

    def encode_image(self, images: Any) -> torch.Tensor: ...

    def encode_text(self, prompts: Any) -> Any: ...


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
        cache_size: entries of the scorer's own ``TextEncodingCache`` (LRU), used instead when
            the clip has no transformers ``text_model`` (duck-typed models), keyed by prompt
            and by the state (:func:`clipguide.model.text_cache.model_key`) of every
            ``torch.nn.Module`` the clip is or holds as an attribute; a clip holding no module
            is keyed by prompt alone. 0 turns off all text caching, the shared cache included
            (as ``cache=False``).
        progress: show a tqdm bar while encoding images (on by default, as diffusers shows
            its pipelines' bars; False hides it).
        workers: threads decoding files and preprocessing images (resize, crop, normalise),
            one batch ahead of the vision tower; default ``min(4, cpu_count)``.
        method: how :meth:`rerank` and :meth:`select` rank a prompt's images, one of
            :data:`clipguide.scoring.methods.METHODS`: ``"clipscore"`` (default), ``"contrastive"``,
            ``"parts"``, ``"views"`` or ``"structured"`` (see :mod:`clipguide.scoring.methods`).
            :meth:`score` is always the plain CLIPScore.

    Prompts are read as prompts: :meth:`score`, :meth:`cosine`, :meth:`matrix` and every
    method compare images with the prompt's plain text
    (:func:`~clipguide.scoring.captions.parse.plain_prompt`: A1111 weights, brackets, LoRA
    tags and ``BREAK`` removed), so ``"a (red circle:1.3)"`` scores as ``"a red circle"``, as
    the pipeline drew it (:meth:`embed_prompts`); :meth:`embed_texts` encodes its texts
    exactly as given.
        weights: the ``"structured"`` method's :class:`~clipguide.scoring.methods.StructureWeights`.
        hold_keys: take the text tower's cache key (:func:`~clipguide.model.text_cache.model_key`,
            15 ms on bigG) once for the scorer's life instead of once per call; only for a
            scorer whose CLIP nothing changes while it is used (a scoring job). Each
            :meth:`select` takes one key either way.
    """

    def __init__(
        self,
        clip: _ClipLike,
        *,
        batch_size: int = 32,
        scale: float = CLIPSCORE_SCALE,
        cache: Any = True,
        cache_size: int = 4096,
        progress: bool = True,
        workers: int | None = None,
        method: str = "clipscore",
        weights: StructureWeights | None = None,
        hold_keys: bool = False,
    ) -> None:
        check_method(method)
        if not isinstance(hold_keys, bool):
            raise TypeError(f"hold_keys must be True or False, got {hold_keys!r:.80}")
        self._held = HeldKeys() if hold_keys else None
        if weights is not None and not isinstance(weights, StructureWeights):
            raise TypeError(f"weights must be a StructureWeights or None, got {weights!r:.80}")
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
        if not isinstance(progress, bool):
            raise TypeError(f"progress must be True or False, got {progress!r}")
        self.clip = clip
        self.method = method
        self.weights = weights or StructureWeights()
        self.batch_size = batch_size
        self.scale = float(scale)
        self.progress = progress
        if workers is not None and (not isinstance(workers, int) or workers < 1):
            raise ValueError(f"workers must be a positive int or None, got {workers!r}")
        self.workers = workers or min(4, os.cpu_count() or 1)
        if cache_size == 0:
            store = None
        self._shared_cache = store if store is not None else False
        # duck-typed clips: the same cache class, private (their keys may be prompts alone)
        self._own_cache = TextEncodingCache(max_entries=cache_size) if store is not None else None

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
            with keys_held(self._held):
                ids = self._tokenize(unique)
                table = cached_text_embeds(self.clip, ids, cache=self._shared_cache)
            found = dict(zip(unique, table, strict=True))
            return normalise(torch.stack([found[p] for p in prompts]))
        return normalise(torch.stack(self._duck_typed_texts(unique, prompts)))

    def embed_prompts(self, prompts: str | Sequence[str]) -> torch.Tensor:
        """Normalised fp32 embeddings (M, D) of each prompt's plain text (weights, brackets,
        LoRA tags and ``BREAK`` removed): what images are compared with."""
        return self.embed_texts(_plain(prompts))

    def _duck_typed_texts(self, unique: list[str], prompts: list[str]) -> list[torch.Tensor]:
        """Embeddings from a clip without a transformers text tower, through the scorer's
        own cache."""
        store = self._own_cache
        with keys_held(self._held):
            state = self._clip_state() if store is not None else ()
        found = {}
        for p in unique:
            entry = store.get((state, p)) if store is not None else None
            if entry is not None:
                found[p] = entry["pooled"]
        missing = [p for p in unique if p not in found]
        if missing:
            with torch.no_grad():
                embeds = self.clip.encode_text(self._tokenize(missing)).embeds.float()
            for prompt, embed in zip(missing, embeds, strict=True):
                found[prompt] = embed
                if store is not None:
                    store.put((state, prompt), {"pooled": embed})
        return [found[p] for p in prompts]

    def _clip_state(self) -> tuple:
        """model_key of every module the (duck-typed) clip is or holds as an attribute."""
        clip = self.clip
        found = [clip] if isinstance(clip, torch.nn.Module) else []
        found += [
            v for v in getattr(clip, "__dict__", {}).values() if isinstance(v, torch.nn.Module)
        ]
        return tuple(model_key(m) for m in found)

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
        batches = batched(items, self.batch_size)
        split = callable(getattr(self.clip, "pixel_values", None)) and callable(
            getattr(self.clip, "image_features", None)
        )
        out = []
        # a CLIP made from a pipeline works where the pipeline executes (see CLIP.working)
        working = getattr(self.clip, "working", None)
        placed = working() if callable(working) else contextlib.nullcontext()
        with self._bar(len(items)) as bar, torch.no_grad(), placed:
            if split:
                for batch, pixels in prefetched(batches, self._pixels, self.workers):
                    out.append(self.clip.image_features(torch.cat(pixels)).float())
                    bar.update(len(batch))
            else:
                for batch in batches:
                    out.append(self.clip.encode_image(as_image_list(list(batch))).float())
                    bar.update(len(batch))
        return normalise(torch.cat(out))

    def _bar(self, total: int) -> Any:
        from tqdm.auto import tqdm

        return tqdm(total=total, unit="img", desc="encoding images", disable=not self.progress)

    def _pixels(self, batch: Sequence[Any]) -> torch.Tensor:
        with torch.no_grad():  # grad mode is per thread
            return self.clip.pixel_values(list(batch))  # decodes files, if any

    # -- scores -----------------------------------------------------------------------------
    def cosine(self, images: ImageInput, prompts: str | Sequence[str]) -> torch.Tensor:
        """Cosine of each image with its prompt (one prompt for all, or one per image): (N,)."""
        image_embeds = self.embed_images(images)
        text_embeds = self.embed_prompts(prompts).to(image_embeds.device)
        if text_embeds.shape[0] not in (1, image_embeds.shape[0]):
            raise ValueError(
                f"prompts must be one string or one per image ({image_embeds.shape[0]}), "
                f"got {text_embeds.shape[0]}"
            )
        return cosine(image_embeds, text_embeds)

    def matrix(self, images: ImageInput, prompts: str | Sequence[str]) -> torch.Tensor:
        """Cosine of every image with every prompt: (N, M)."""
        image_embeds = self.embed_images(images)
        texts = self.embed_prompts(prompts)
        return cosine_matrix(image_embeds, texts.to(image_embeds.device))

    def score(self, images: ImageInput, prompts: str | Sequence[str]) -> torch.Tensor:
        """CLIPScore per image, ``scale * max(cos, 0)``: (N,)."""
        return clip_score(self.cosine(images, prompts), self.scale)

    def select(
        self,
        images: ImageInput,
        prompt: str,
        method: str | None = None,
        layouts: Sequence[Any] | None = None,
    ) -> torch.Tensor:
        """Selection score of each image for one prompt by ``method`` (default: the scorer's):
        (N,), higher is better, comparable only among images of that prompt and method.
        ``layouts``: the layouts the images were drawn on, read by ``"structured"``
        (:func:`~clipguide.scoring.methods.selection_scores`)."""
        method = self.method if method is None else check_method(method)
        with keys_held(self._held):  # one key for the select's two or three encodes
            return selection_scores(self, images, prompt, method, self.weights, layouts)

    def rerank(self, images: ImageInput, prompt: str, method: str | None = None) -> Ranking:
        """Rank images against one prompt by ``method`` (default: the scorer's), best first
        (ties: lower index first); the ranking's scores are that method's."""
        if not isinstance(prompt, str):
            raise TypeError(f"prompt must be a str, got {type(prompt).__name__}: {prompt!r:.80}")
        return rank(self.select(images, prompt, method))

    def robust_scores(self, images: ImageInput, prompts: str | Sequence[str]) -> RobustScores:
        """Scores of the images and of their JPEG-75, 0.9-crop and grayscale views."""
        items = as_image_list(images)
        views = {v: [robust_view(item, v) for item in items] for v in ROBUST_VIEWS}
        return RobustScores(
            clean=self.score(items, prompts), **{v: self.score(views[v], prompts) for v in views}
        )


def _plain(prompts: str | Sequence[str]) -> list[str]:
    """The plain text of each prompt (the prompt itself when nothing would be left)."""
    return [plain_prompt(p) or p for p in _prompt_list(prompts, "prompts")]


def _prompt_list(prompts: str | Sequence[str], name: str) -> list[str]:
    if isinstance(prompts, str):
        return [prompts]
    if isinstance(prompts, Sequence) and prompts and all(isinstance(p, str) for p in prompts):
        return list(prompts)
    raise TypeError(f"{name} must be a str or a non-empty list of str, got {prompts!r:.80}")
