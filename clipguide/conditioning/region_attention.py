"""Thin adapter: regional prompts on a stock diffusers pipeline through cross-attention hooks.

Why a forward hook on each cross-attention layer rather than a replacement processor: the layer
keeps the processor it has (SDPA, xformers, IP-Adapter, a LoRA's, anything set later), and
detaching only removes hooks, so the processor objects never change. After the layer has
attended to the whole prompt, the hook runs the layer's own ``forward`` (its installed
processor, hooks bypassed) on the conditional rows once per active region, with that region's
embeddings as ``encoder_hidden_states``, and blends the outputs by the region masks at the
layer's resolution. IP-Adapter's image tokens (the tuple ``(text, [image tokens])`` diffusers
passes) are kept: only the text part is swapped. Which evaluation is under way (step window,
CFG rows, latent size) comes from the pipeline's :class:`~clipguide.guidance.hooks.PipelineHooks`,
shared with CLIP guidance.
"""

from __future__ import annotations

from typing import Any

import torch

from clipguide.conditioning.encode import encode_prompt
from clipguide.conditioning.region_masks import blend_regions, region_masks, region_shares
from clipguide.guidance.hooks import PipelineHooks, last_rows

__all__ = ["RegionAttachment", "cross_attention_layers", "check_regions_pipeline"]

_TEXT_PROJECTED = ("text_proj",)  # the UNet projects text embeddings before attention
_TEXT_AS_IS = (None, "ip_image_proj")


def _name(value: Any) -> str:
    return f"<{type(value).__name__}>"


def cross_attention_layers(unet: torch.nn.Module) -> list[torch.nn.Module]:
    """The UNet's attention layers that attend to the text (``is_cross_attention``)."""
    return [
        m
        for m in unet.modules()
        if getattr(m, "is_cross_attention", False) and hasattr(m, "processor")
    ]


def check_regions_pipeline(pipe: Any) -> list[torch.nn.Module]:
    """The pipeline's cross-attention layers; raise if regions cannot attach to ``pipe``."""
    from diffusers.modular_pipelines import ModularPipeline

    if isinstance(pipe, ModularPipeline):
        raise TypeError(
            f"pipe={_name(pipe)} is a modular pipeline: its guider runs the UNet once per "
            "condition, so a UNet hook cannot tell the conditional rows; regions attach to "
            "StableDiffusionPipeline, StableDiffusionXLPipeline and their subclasses"
        )
    unet = getattr(pipe, "unet", None)
    if not isinstance(unet, torch.nn.Module) or getattr(pipe, "scheduler", None) is None:
        raise TypeError(
            f"pipe={_name(pipe)} is not supported: regions attach to pipelines with a `unet` "
            "and a `scheduler` (StableDiffusionPipeline, StableDiffusionXLPipeline and their "
            "subclasses)"
        )
    if not hasattr(pipe, "__dict__"):
        raise TypeError(f"pipe={_name(pipe)} keeps no instance attributes (__slots__)")
    layers = cross_attention_layers(unet)
    if not layers:
        raise ValueError(
            f"pipe={_name(pipe)} has no cross-attention layers in its unet "
            f"({type(unet).__name__}): regions condition the text cross-attention, so they "
            "need a text-conditioned UNet (UNet2DConditionModel with cross_attention_dim)"
        )
    kind = getattr(getattr(unet, "config", None), "encoder_hid_dim_type", None)
    if kind not in _TEXT_PROJECTED + _TEXT_AS_IS:
        raise ValueError(
            f"pipe={_name(pipe)}'s unet has encoder_hid_dim_type={kind!r}, whose attention does "
            f"not read the prompt embeddings; accepted: {list(_TEXT_PROJECTED + _TEXT_AS_IS)}"
        )
    return layers


class RegionAttachment:
    """One ``RegionalPrompt`` on one pipeline; a context manager that detaches on exit."""

    def __init__(self, prompt: Any, pipe: Any) -> None:
        layers = check_regions_pipeline(pipe)
        self.prompt = prompt
        self.pipe = pipe
        # encode before installing anything: a bad region prompt fails with nothing attached
        self._embeds = [self._encode(pipe, region.prompt) for region in prompt.regions]
        self._weights = torch.tensor([r.weight for r in prompt.regions], dtype=torch.float32)
        self._cache: dict[tuple, Any] = {}
        self.hooks: PipelineHooks | None = PipelineHooks.of(pipe)
        self.hooks.add(self)
        if prompt.regions:
            for layer in layers:
                self.hooks.hook_module(self, layer, self._on_attention)

    @staticmethod
    def _encode(pipe: Any, text: str) -> torch.Tensor:
        embeds = encode_prompt(pipe, text).prompt_embeds[:1]
        unet = pipe.unet
        if getattr(unet.config, "encoder_hid_dim_type", None) in _TEXT_PROJECTED:
            with torch.no_grad():
                embeds = unet.encoder_hid_proj(embeds.to(unet.device, unet.dtype))
        return embeds.detach()

    def __enter__(self) -> Any:
        return self.prompt

    def __exit__(self, *exc: object) -> None:
        self.detach()

    def detach(self) -> None:
        """Leave the pipeline; the last attachment to leave restores it exactly."""
        if self.hooks is not None:
            self.hooks.remove(self)
            self.hooks = None
        if self.prompt._attachment is self:
            self.prompt._attachment = None

    # -- registry entry: regions act inside the UNet, not on its output -------------------------
    def new_run(self) -> None:
        return None

    def step(self, *args: Any) -> None:
        return None

    # -- the attention hook --------------------------------------------------------------------
    def _embeds_on(self, index: int, like: torch.Tensor) -> torch.Tensor:
        key = ("embeds", index, like.device, like.dtype)
        if key not in self._cache:
            self._cache[key] = self._embeds[index].to(device=like.device, dtype=like.dtype)
        return self._cache[key]

    def _masks_on(self, latent_hw: tuple[int, int], seq_len: int, like: torch.Tensor):
        key = ("masks", latent_hw, seq_len, like.device)
        if key not in self._cache:
            masks = region_masks(self.prompt.regions, latent_hw, seq_len, device=like.device)
            self._cache[key] = masks
        return self._cache[key]

    def _on_attention(self, module: Any, args: tuple, kwargs: dict, output: Any) -> Any:
        state = self.hooks.current if self.hooks is not None else None
        if state is None:
            return None
        active = self.prompt.active(state.position, state.total)
        if not active:
            return None
        kwargs = dict(kwargs)
        names = ("hidden_states", "encoder_hidden_states", "attention_mask")
        kwargs.update(zip(names, args, strict=False))
        hidden = kwargs.pop("hidden_states")
        context = kwargs.pop("encoder_hidden_states", None)
        if context is None:  # a layer used as self-attention: nothing to condition
            return None
        text = context[0] if isinstance(context, tuple) else context
        self._check_call(module, hidden, context, output, kwargs)
        n = hidden.shape[0]
        b = state.conditional_rows(n)
        rest = last_rows(kwargs, n, b)
        outputs = []
        for index in active:
            embeds = self._embeds_on(index, text).expand(b, -1, -1)
            region_context: Any = embeds
            if isinstance(context, tuple):  # IP-Adapter: (text, [image tokens per adapter])
                region_context = (embeds, *last_rows(tuple(context[1:]), n, b))
            outputs.append(
                module.forward(hidden[n - b :], encoder_hidden_states=region_context, **rest)
            )
        masks = self._masks_on(state.latent_hw, hidden.shape[1], output)
        shares = region_shares(masks[active], self._weights[active], self.prompt.blend)
        mixed = blend_regions(output[n - b :], outputs, shares)
        return mixed if b == n else torch.cat([output[: n - b], mixed])

    @staticmethod
    def _check_call(module: Any, hidden: Any, context: Any, output: Any, kwargs: dict) -> None:
        layer = type(module).__name__
        if (
            not isinstance(output, torch.Tensor)
            or hidden.dim() != 3
            or output.shape[:2] != hidden.shape[:2]
        ):
            raise RuntimeError(
                f"regions: cross-attention layer {layer} was called with hidden_states of shape "
                f"{tuple(hidden.shape)} and returned {_name(output)}; regions support layers "
                "taking and returning (batch, tokens, channels) tensors"
            )
        if kwargs.get("attention_mask") is not None:
            raise ValueError(
                "regions: the UNet was called with an encoder attention mask, which masks the "
                "whole prompt's tokens and cannot apply to a region's; call it without "
                "encoder_attention_mask, or detach the regions"
            )
        if not isinstance(context, tuple) and hasattr(module.processor, "num_tokens"):
            raise ValueError(
                f"regions: the layer's processor {type(module.processor).__name__} reads "
                "IP-Adapter image tokens appended to the text tokens (a deprecated layout); "
                "regions need them passed as diffusers does, as a tuple (text, image tokens)"
            )
