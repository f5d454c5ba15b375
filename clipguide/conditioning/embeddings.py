"""The return type of :func:`~clipguide.conditioning.encode_prompt`: a pipeline's embedding
arguments as a frozen mapping (``pipe(**cond)``), carrying its plain prompt beside the keys."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from clipguide.conditioning.carried import remember_prompt
from clipguide.conditioning.towers import as_device

__all__ = ["Conditioning"]


@dataclass(frozen=True, eq=False)
class Conditioning(Mapping):
    """Pipeline embedding arguments; ``pipe(**cond)`` passes the fields that are not None.

    SDXL, its refiner and SD3 get all four; SD 1/2 pipelines take no pooled embeddings.
    ``prompt`` and ``negative_prompt`` are the plain texts (weights and ``BREAK`` removed),
    one per row of ``prompt_embeds`` (None for hand-made embeddings, or zeros for the
    negative). They are not among the mapping's keys: ``pipe(**cond)`` passes embeddings
    only, and CLIP guidance and ``best_of_n`` find the text from ``prompt_embeds``
    (:func:`~clipguide.conditioning.carried.prompt_of`).
    """

    prompt_embeds: torch.Tensor
    negative_prompt_embeds: torch.Tensor
    pooled_prompt_embeds: torch.Tensor | None = None
    negative_pooled_prompt_embeds: torch.Tensor | None = None
    prompt: tuple[str, ...] | None = field(default=None, kw_only=True)
    negative_prompt: tuple[str, ...] | None = field(default=None, kw_only=True)

    __eq__ = object.__eq__  # identity: Mapping's item-wise == is ambiguous for tensors
    __hash__ = object.__hash__

    def __post_init__(self) -> None:
        self._check_texts()
        prompt, negative = self.prompt_embeds, self.negative_prompt_embeds
        _check_tensor(prompt, "prompt_embeds", 3, "(B, L, D)")
        _check_tensor(negative, "negative_prompt_embeds", 3, "(B, L, D)")
        if negative.shape != prompt.shape:
            raise ValueError(
                f"negative_prompt_embeds must have prompt_embeds' shape {tuple(prompt.shape)}, "
                f"got {tuple(negative.shape)}"
            )
        pooled, neg_pooled = self.pooled_prompt_embeds, self.negative_pooled_prompt_embeds
        if (pooled is None) != (neg_pooled is None):
            raise ValueError(
                "pooled_prompt_embeds and negative_pooled_prompt_embeds must both be tensors or "
                f"both None, got {_kind(pooled)} and {_kind(neg_pooled)}"
            )
        if pooled is not None:
            _check_tensor(pooled, "pooled_prompt_embeds", 2, "(B, D)")
            _check_tensor(neg_pooled, "negative_pooled_prompt_embeds", 2, "(B, D)")
            if pooled.shape[0] != prompt.shape[0] or neg_pooled.shape != pooled.shape:
                raise ValueError(
                    f"pooled_prompt_embeds {tuple(pooled.shape)} and "
                    f"negative_pooled_prompt_embeds {tuple(neg_pooled.shape)} must be "
                    f"({prompt.shape[0]}, D), one row per row of prompt_embeds"
                )
        if self.prompt is not None:
            remember_prompt(prompt, self.prompt)

    def _check_texts(self) -> None:
        rows = self.prompt_embeds.shape[0] if isinstance(self.prompt_embeds, torch.Tensor) else 0
        for name in ("prompt", "negative_prompt"):
            texts = getattr(self, name)
            if texts is None:
                continue
            if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
                raise TypeError(f"{name} must be None or a tuple of str, got {texts!r:.80}")
            if len(texts) != rows:
                raise ValueError(
                    f"{name} has {len(texts)} texts but prompt_embeds has {rows} rows; give "
                    "one text per row"
                )
            object.__setattr__(self, name, tuple(texts))

    def __getitem__(self, key: str) -> torch.Tensor:
        if key not in self._names():
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())

    def _names(self) -> list[str]:
        return [k for k in _EMBEDDINGS if getattr(self, k) is not None]

    def __repr__(self) -> str:
        parts = ", ".join(f"{k}={tuple(v.shape)} {v.dtype}" for k, v in self.items())
        if self.prompt is not None:
            parts += f", prompt={self.prompt[0]!r:.60}" + (" ..." if len(self.prompt) > 1 else "")
        return f"Conditioning({parts})"

    def to_kwargs(self) -> dict[str, torch.Tensor]:
        """The pipeline keyword arguments as a plain dict."""
        return dict(self.items())

    def to(self, device: Any = None, dtype: torch.dtype | None = None) -> Conditioning:
        """A copy with every tensor moved/cast."""
        device = as_device(device) if device is not None else None
        if dtype is not None and not isinstance(dtype, torch.dtype):
            raise TypeError(f"dtype must be a torch.dtype (e.g. torch.float16), got {dtype!r}")
        return replace(self, **{k: v.to(device=device, dtype=dtype) for k, v in self.items()})


_EMBEDDINGS = (
    "prompt_embeds",
    "negative_prompt_embeds",
    "pooled_prompt_embeds",
    "negative_pooled_prompt_embeds",
)


def _kind(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    return f"{type(value).__name__} {value!r:.40}"


def _check_tensor(value: Any, name: str, ndim: int, shape: str) -> None:
    if not isinstance(value, torch.Tensor) or value.ndim != ndim:
        raise ValueError(f"{name} must be a {shape} tensor, got {_kind(value)}")
