"""One CLIP object for conditioning, guidance and scoring: text tower, vision tower, tokenizer
and preprocessing, held in transformers layout whatever the source."""

from __future__ import annotations

import contextlib
import dataclasses
import warnings
import weakref
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image
from transformers import (
    CLIPTextModelWithProjection,
    CLIPTokenizer,
    CLIPVisionModelWithProjection,
)

from clipguide.model.images import as_image_list
from clipguide.model.preprocess import Preprocess

__all__ = ["CLIP", "TextEncoding", "Placement", "plan_placement", "same_device"]


@dataclasses.dataclass(frozen=True)
class TextEncoding:
    """What the text tower gives for a batch of prompts.

    Attributes:
        hidden_states: (B, L, width) hidden states of the chosen layer (penultimate by
            default: the layer SDXL conditions on), before the final layer norm.
        pooled: (B, D) projected end-token embedding, not normalised (SDXL's ``text_embeds``).
        embeds: (B, D) float32 L2-normalised ``pooled``, for similarity.
    """

    hidden_states: torch.Tensor
    pooled: torch.Tensor
    embeds: torch.Tensor


@dataclasses.dataclass(frozen=True)
class Placement:
    """Where the vision tower works, where it rests between uses, and its dtype."""

    work: torch.device
    home: torch.device
    dtype: torch.dtype


def same_device(a: torch.device | str, b: torch.device | str) -> bool:
    """``cuda`` and ``cuda:0`` are the same place when one of them names no index."""
    a, b = torch.device(a), torch.device(b)
    return a.type == b.type and (a.index is None or b.index is None or a.index == b.index)


def plan_placement(
    vision_device: torch.device,
    vision_dtype: torch.dtype,
    *,
    work: torch.device | str | None = None,
    stays: bool = False,
    dtype: torch.dtype | None = None,
) -> Placement:
    """Where the vision tower should be while working (pure).

    ``work``: where the work happens (a followed pipeline's execution device, or the device a
    caller borrows the tower for); None keeps it where it is. ``stays``: it remains at ``work``
    afterwards (a pipeline kept on its execution device); otherwise it is borrowed and goes back
    to ``vision_device`` (a standalone CLIP; a pipeline under CPU offload). ``dtype``: the dtype
    to take and keep (a followed pipeline's text tower's), else its own.
    """
    dtype = dtype or vision_dtype
    if work is None:
        return Placement(vision_device, vision_device, dtype)
    work = torch.device(work)
    return Placement(work, work if stays else vision_device, dtype)


def _offloaded(module: torch.nn.Module) -> bool:
    """Whether accelerate offload hooks manage ``module`` (model or sequential CPU offload)."""
    return any(hasattr(m, "_hf_hook") for m in module.modules())


class CLIP:
    """A CLIP model: any subset of text/vision towers plus tokenizer and preprocessing."""

    def __init__(
        self,
        *,
        text_model: CLIPTextModelWithProjection | None = None,
        vision_model: CLIPVisionModelWithProjection | None = None,
        tokenizer: CLIPTokenizer | None = None,
        preprocess: Preprocess | None = None,
        name: str = "clip",
        logit_scale: float | None = None,
    ) -> None:
        if text_model is None and vision_model is None:
            raise ValueError("CLIP needs at least one tower: text_model or vision_model")
        if text_model is not None and tokenizer is None:
            raise ValueError("a text_model needs its tokenizer; got tokenizer=None")
        if vision_model is not None and preprocess is None:
            raise ValueError("a vision_model needs its preprocess config; got preprocess=None")
        self.text_model = text_model.eval() if text_model is not None else None
        self.vision_model = vision_model.eval() if vision_model is not None else None
        self.tokenizer = tokenizer
        self.preprocess = preprocess
        self.name = name
        self.logit_scale = logit_scale
        self._pipeline: Any = None  # weakref to a followed pipeline, see follow()
        self._follow = (False, False)

    def __repr__(self) -> str:
        towers = ", ".join(self.towers)
        return (
            f"CLIP(name={self.name!r}, towers=({towers}), device={self.device}, dtype={self.dtype})"
        )

    # -- properties --------------------------------------------------------------------------
    @property
    def towers(self) -> tuple[str, ...]:
        return tuple(
            t
            for t, m in (("text", self.text_model), ("vision", self.vision_model))
            if m is not None
        )

    def _any_param(self) -> torch.nn.Parameter:
        model = self.vision_model if self.vision_model is not None else self.text_model
        return next(model.parameters())  # type: ignore[union-attr]

    @property
    def device(self) -> torch.device:
        return self._any_param().device

    @property
    def dtype(self) -> torch.dtype:
        return self._any_param().dtype

    @property
    def context_length(self) -> int:
        self._require("text")
        return int(self.text_model.config.max_position_embeddings)  # type: ignore[union-attr]

    @property
    def embed_dim(self) -> int:
        model = self.vision_model if self.vision_model is not None else self.text_model
        return int(model.config.projection_dim)  # type: ignore[union-attr]

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> CLIP:
        """Move both towers (in place) and return self."""
        for model in (self.text_model, self.vision_model):
            if model is not None:
                model.to(device=device, dtype=dtype)
        return self

    def follow(self, pipe: Any, *, device: bool = True, dtype: bool = True) -> CLIP:
        """Make the vision tower follow ``pipe`` (held weakly) whenever it works: on the
        pipeline's execution device (borrowed and returned under CPU offload) and in its text
        tower's dtype. ``load_clip(pipe)`` sets this; ``device``/``dtype`` False keep yours."""
        self._pipeline = weakref.ref(pipe)
        self._follow = (bool(device), bool(dtype))
        return self

    def placement(self, device: torch.device | str | None = None) -> Placement:
        """Where the vision tower works now (see :func:`plan_placement`); ``device`` is used
        when no followed pipeline decides it."""
        self._require("vision")
        param = next(self.vision_model.parameters())  # type: ignore[union-attr]
        pipe = self._pipeline() if self._pipeline is not None else None
        follow_device, follow_dtype = self._follow if pipe is not None else (False, False)
        text = self.text_model
        text_param = next(text.parameters()) if text is not None else None
        work, stays = device, False
        if follow_device:
            work = getattr(pipe, "_execution_device", None)
            if work is None and text_param is not None:
                work = text_param.device
            stays = (
                text is not None and not _offloaded(text) and same_device(text_param.device, work)  # type: ignore[union-attr]
            )
        return plan_placement(
            param.device,
            param.dtype,
            work=work,
            stays=stays,
            dtype=text_param.dtype if (follow_dtype and text_param is not None) else None,
        )

    @contextlib.contextmanager
    def working(self, device: torch.device | str | None = None) -> Iterator[CLIP]:
        """The vision tower placed for work (see :meth:`placement`), put back at its home after."""
        if self.vision_model is None:
            yield self
            return
        vision = self.vision_model
        plan = self.placement(device)
        if vision.dtype != plan.dtype:
            vision.to(dtype=plan.dtype)
        moved = not same_device(vision.device, plan.work)
        if moved:
            vision.to(plan.work)
        try:
            yield self
        finally:
            if moved and not same_device(plan.home, plan.work):
                vision.to(plan.home)

    def requires_grad_(self, flag: bool = False) -> CLIP:
        for model in (self.text_model, self.vision_model):
            if model is not None:
                model.requires_grad_(flag)
        return self

    def _require(self, tower: str) -> None:
        if tower not in self.towers:
            raise ValueError(
                f"this CLIP ({self.name!r}) has no {tower} tower; load it with "
                f"towers including {tower!r} (has {self.towers})"
            )

    # -- text --------------------------------------------------------------------------------
    def tokenize(self, prompts: str | Sequence[str], *, warn: bool = True) -> torch.Tensor:
        """Token ids (B, context_length); long prompts are cut keeping the end token."""
        self._require("text")
        if isinstance(prompts, str):
            prompts = [prompts]
        if not all(isinstance(p, str) for p in prompts):
            bad = next(p for p in prompts if not isinstance(p, str))
            raise TypeError(f"prompts must be str or a list of str; got an item {bad!r}")
        n = self.context_length
        tok = self.tokenizer
        rows = tok(list(prompts))["input_ids"]  # type: ignore[misc]  # one pass, untruncated
        long = [len(r) for r in rows if len(r) > n]
        if warn and long:
            warnings.warn(
                f"{len(long)} prompt(s) exceed the {n}-token context (longest {max(long)} "
                f"tokens) and were truncated, keeping the end token; use "
                f"clipguide.encode_prompt for long-prompt chunking.",
                stacklevel=2,
            )
        # cut keeping the end token, then pad: what truncation=True, padding="max_length" gives
        rows = [r[: n - 1] + r[-1:] if len(r) > n else r for r in rows]
        pad = tok.pad_token_id  # type: ignore[union-attr]
        ids = torch.tensor([r + [pad] * (n - len(r)) for r in rows], dtype=torch.long)
        return ids

    def encode_text(
        self, prompts: str | Sequence[str] | torch.Tensor, *, hidden_layer: int = -2
    ) -> TextEncoding:
        """Encode prompts (or token ids) to hidden states, pooled and normalised embeddings."""
        self._require("text")
        ids = prompts if isinstance(prompts, torch.Tensor) else self.tokenize(prompts)
        out = self.text_model(  # type: ignore[misc]
            input_ids=ids.to(self.text_model.device),
            output_hidden_states=True,  # type: ignore[union-attr]
        )
        pooled = out.text_embeds
        return TextEncoding(
            hidden_states=out.hidden_states[hidden_layer],
            pooled=pooled,
            embeds=F.normalize(pooled.float(), dim=-1),
        )

    # -- images ------------------------------------------------------------------------------
    def pixel_values(self, images) -> torch.Tensor:
        """Model-ready normalised (B, 3, S, S) input; differentiable for tensor inputs."""
        self._require("vision")
        items = as_image_list(images)
        pre = self.preprocess  # type: ignore[assignment]
        device, dtype = self.vision_model.device, self.vision_model.dtype  # type: ignore[union-attr]
        out: list[torch.Tensor | None] = [None] * len(items)
        pil = [i for i, x in enumerate(items) if isinstance(x, Image.Image)]
        if pil:
            batch = pre.from_pil([items[i] for i in pil]).to(device)  # type: ignore[union-attr]
            for j, i in enumerate(pil):
                out[i] = batch[j]
        groups: dict[tuple, list[int]] = {}
        for i, x in enumerate(items):
            if isinstance(x, torch.Tensor):
                groups.setdefault(tuple(x.shape), []).append(i)
        for index in groups.values():  # one batched, differentiable pass per input size
            batch = torch.stack([items[i] for i in index]).to(device, torch.float32)  # type: ignore[misc]
            batch = pre.from_tensor(batch)  # type: ignore[union-attr]
            for j, i in enumerate(index):
                out[i] = batch[j]
        return torch.stack(out).to(dtype)  # type: ignore[arg-type]

    def image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Projected image embeddings (B, D), not normalised (differentiable)."""
        self._require("vision")
        return self.vision_model(pixel_values=pixel_values).image_embeds  # type: ignore[misc]

    def encode_image(self, images) -> torch.Tensor:
        """float32 L2-normalised image embeddings (B, D); differentiable for tensors."""
        with self.working():
            return F.normalize(self.image_features(self.pixel_values(images)).float(), dim=-1)
