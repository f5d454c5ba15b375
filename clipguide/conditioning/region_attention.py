"""Thin adapter: regional prompts on a stock diffusers pipeline through cross-attention hooks.

Why a forward hook on each cross-attention layer rather than a replacement processor: the layer
keeps the processor it has (SDPA, xformers, IP-Adapter, a LoRA's, anything set later), and
detaching only removes hooks, so the processor objects never change. After the layer has
attended to the whole prompt, the hook calls the layer's installed processor again on the
conditional rows for the active regions, with each region's embeddings as
``encoder_hidden_states``, and blends the outputs by the region masks at the layer's
resolution. Queries do not interact in cross-attention, so each region's call runs on the
tokens its mask covers only (where the layer has no group/spatial norm and no extra per-token
arguments such as IP-Adapter masks), and regions covering as many tokens share one batched
call: regions that tile the image cost about one extra cross-attention pass on the
conditional rows however many there are. IP-Adapter's image tokens (the tuple ``(text, [image tokens])`` diffusers
passes) are kept: only the text part is swapped. Which evaluation is under way (step window,
CFG rows, latent size) comes from the pipeline's :class:`~clipguide.guidance.hooks.PipelineHooks`,
shared with CLIP guidance.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch

from clipguide.conditioning.encode import encode_prompt
from clipguide.conditioning.placement import blob_weights, placement_delta
from clipguide.conditioning.region_masks import add_region, region_masks, region_shares
from clipguide.guidance.hooks import Attachment, check_hookable, last_rows
from clipguide.guidance.schedulers import output_change_from_eps, parameterisation
from clipguide.guidance.step import DenoiserStep

__all__ = [
    "RegionAttachment",
    "cross_attention_layers",
    "check_regions_pipeline",
    "colour_latents",
]

_TEXT_PROJECTED = ("text_proj",)  # the UNet projects text embeddings before attention
_TEXT_AS_IS = (None, "ip_image_proj")


def _name(value: Any) -> str:
    return f"<{type(value).__name__}>"


def _stack(parts: list[torch.Tensor]) -> torch.Tensor:
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def _repeat_rows(value: Any, times: int) -> Any:
    """Every tensor inside ``value`` (nested lists/tuples) repeated ``times`` along its batch."""
    if times == 1:
        return value
    if isinstance(value, torch.Tensor):
        return torch.cat([value] * times)
    if isinstance(value, (list, tuple)):
        return type(value)(_repeat_rows(v, times) for v in value)
    return value


def cross_attention_layers(unet: torch.nn.Module) -> list[torch.nn.Module]:
    """The UNet's attention layers that attend to the text (``is_cross_attention``)."""
    return [
        m
        for m in unet.modules()
        if getattr(m, "is_cross_attention", False) and hasattr(m, "processor")
    ]


def check_regions_pipeline(pipe: Any) -> list[torch.nn.Module]:
    """The pipeline's cross-attention layers; raise if regions cannot attach to ``pipe``."""
    check_hookable(
        pipe,
        "regions",
        "regions attach to StableDiffusionPipeline, StableDiffusionXLPipeline and their subclasses",
    )
    unet = pipe.unet
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


@torch.no_grad()
def colour_latents(pipe: Any, colours: list[tuple[int, int, int]]) -> torch.Tensor:
    """(R, C) float32 latents of flat images of ``colours``, encoded by ``pipe.vae`` and
    normalised as the pipeline's latents are (``scaling_factor``, ``shift_factor``)."""
    vae = getattr(pipe, "vae", None)
    if not colours:
        return torch.zeros(0, 0)
    if vae is None or not hasattr(vae, "encode"):
        raise ValueError(
            f"place: pipe={_name(pipe)} has no VAE (pipe.vae) to encode the regions' colours; "
            "use place=0, or a pipeline with a VAE"
        )
    param = next(vae.parameters())
    side = 8 * getattr(pipe, "vae_scale_factor", 8)
    rgb = torch.tensor(colours, dtype=torch.float32) / 127.5 - 1.0
    images = rgb[:, :, None, None].expand(-1, -1, side, side)

    def encode(model: Any, dtype: torch.dtype) -> torch.Tensor:
        found = model.encode(images.to(param.device, dtype)).latent_dist.mean
        return found.float().mean(dim=(2, 3))

    latents = encode(vae, param.dtype)
    if not bool(torch.isfinite(latents).all()) and param.dtype != torch.float32:
        import copy

        latents = encode(copy.deepcopy(vae).float(), torch.float32)  # fp16 VAE overflowed
    config = vae.config
    shift = getattr(config, "shift_factor", None) or 0.0
    return ((latents - shift) * config.scaling_factor).cpu()


def _check_placement_scheduler(pipe: Any, place: float) -> None:
    """Placement reads x0 from the model output as guidance does: refuse, before sampling, a
    scheduler whose parameterisation guidance does not support."""
    try:
        parameterisation(pipe.scheduler)
    except ValueError as err:
        raise ValueError(f"place={place}: {err}; use place=0 with this scheduler") from None


class RegionAttachment(Attachment):
    """One ``RegionalPrompt`` on one pipeline; a context manager that detaches on exit. Regions
    act inside the UNet (attention hooks); the registry's ``step`` changes its output only for
    placement (``RegionalPrompt(place=...)``)."""

    def __init__(
        self, prompt: Any, pipe: Any, encode: Callable[[str], torch.Tensor] | None = None
    ) -> None:
        """Args: ``encode`` maps a region's prompt to its (1, L, D) embeddings; default
        ``encode_prompt(pipe, text).prompt_embeds`` (benchmarks pass meta-device stand-ins)."""
        layers = check_regions_pipeline(pipe)
        self.prompt = prompt
        self.pipe = pipe
        if encode is None:
            encode = lambda text: encode_prompt(pipe, text).prompt_embeds[:1]  # noqa: E731
        # encode before installing anything: a bad region prompt fails with nothing attached;
        # a region of weight 0 never attends (it may still be placed), so it is not encoded
        self._embeds = [
            self._project(pipe, encode(region.prompt)) if region.weight != 0 else None
            for region in prompt.regions
        ]
        self._weights = torch.tensor([r.weight for r in prompt.regions], dtype=torch.float32)
        self._cache: dict[tuple, Any] = {}
        placed = prompt.regions if prompt.place > 0 else ()  # weight 0 regions too
        if placed:
            _check_placement_scheduler(pipe, prompt.place)
        self._colours = colour_latents(pipe, [r.placement_colour() for r in placed])
        self._blobs = [r.box if r.box is not None else r.mask for r in placed]
        super().__init__(prompt, pipe)
        if any(region.weight != 0 for region in prompt.regions):
            for layer in layers:
                self.hooks.hook_module(self, layer, self._on_attention)

    def step(
        self, unet: Any, args: tuple, kwargs: dict, output: Any, position: int, total: int
    ) -> Any:
        """Placement: the output changed so the scheduler steps with the pulled ``x0``."""
        if not self._blobs or not self.prompt.placing(position, total):
            return None
        step = DenoiserStep.from_unet_call(self.pipe, args, kwargs, output)
        if step.level.sigma <= 0:  # a noiseless evaluation: nothing to steer
            return None
        x0, _ = step.x0_eps()
        key = ("blobs", tuple(x0.shape[-2:]), x0.device)
        if key not in self._cache:
            self._cache[key] = blob_weights(self._blobs, x0.shape[-2:]).to(x0.device)
        delta = placement_delta(x0, self._colours, self._cache[key], self.prompt.place)
        level = step.level
        return step.add(output, output_change_from_eps(-level.alpha / level.sigma * delta, level))

    @staticmethod
    def _project(pipe: Any, embeds: torch.Tensor) -> torch.Tensor:
        unet = pipe.unet
        if getattr(unet.config, "encoder_hid_dim_type", None) in _TEXT_PROJECTED:
            with torch.no_grad():
                embeds = unet.encoder_hid_proj(embeds.to(unet.device, unet.dtype))
        return embeds.detach()

    # -- the attention hook --------------------------------------------------------------------
    def _embeds_on(self, index: int, like: torch.Tensor) -> torch.Tensor:
        key = ("embeds", index, like.device, like.dtype)
        if key not in self._cache:
            self._cache[key] = self._embeds[index].to(device=like.device, dtype=like.dtype)
        return self._cache[key]

    def _masks_on(self, latent_hw: tuple[int, int], seq_len: int, like: torch.Tensor):
        """(R, S) masks on this layer's grid and, per region, the tokens it covers."""
        key = ("masks", latent_hw, seq_len, like.device)
        if key not in self._cache:
            masks = region_masks(self.prompt.regions, latent_hw, seq_len)  # on the CPU
            tokens = [None if bool(m.all()) else m.nonzero()[:, 0].to(like.device) for m in masks]
            self._cache[key] = masks.to(like.device), tokens
        return self._cache[key]

    def _shares_on(self, latent_hw: tuple[int, int], seq_len: int, active: list[int], like):
        key = ("shares", latent_hw, seq_len, like.device, tuple(active))
        if key not in self._cache:
            masks = self._masks_on(latent_hw, seq_len, like)[0]
            weights = self._weights[active]
            self._cache[key] = region_shares(masks[active], weights, self.prompt.blend)
        return self._cache[key]

    def _call_processor(self, module: Any, hidden: Any, context: Any, rest: dict) -> Any:
        """The layer's installed processor, given the arguments it declares (as
        ``Attention.forward`` does, with the signature read once per processor)."""
        processor = module.processor
        key = ("params", id(processor))
        found = self._cache.get(key)
        if found is None or found[0] is not processor:
            found = self._cache[key] = (
                processor,
                set(inspect.signature(processor.__call__).parameters),
            )
        extra = {k: v for k, v in rest.items() if k in found[1] and k != "attention_mask"}
        return processor(
            module, hidden, encoder_hidden_states=context, attention_mask=None, **extra
        )

    def _on_attention(self, module: Any, args: tuple, kwargs: dict, output: Any) -> Any:
        state = self.hooks.current if self.hooks is not None else None
        if state is None:
            return None
        key = ("active", state.position, state.total)
        if key not in self._cache:
            self._cache[key] = self.prompt.active(state.position, state.total)
        active = self._cache[key]
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
        n, seq_len = hidden.shape[:2]
        b = state.conditional_rows(n)
        rest = last_rows(kwargs, n, b)
        covered = self._masks_on(state.latent_hw, seq_len, output)[1]
        shares = self._shares_on(state.latent_hw, seq_len, active, output)
        # queries are independent in cross-attention: a region's call needs only the tokens
        # it covers, unless the layer mixes tokens (group/spatial norm) or extra arguments
        # (IP-Adapter masks) are laid out over every token; then regions of equal token and
        # embedding counts share one batched processor call
        per_token = all(v is None for v in rest.values())
        per_token = per_token and module.group_norm is None and module.spatial_norm is None
        groups: dict[tuple, list] = {}
        for k, index in enumerate(active):
            tokens = covered[index] if per_token else None
            embeds = self._embeds_on(index, text)
            size = seq_len if tokens is None else tokens.numel()
            key = (size, embeds.shape[1]) if per_token else (k,)
            groups.setdefault(key, []).append((k, tokens, embeds))
        whole, query = output[n - b :], hidden[n - b :]
        mixed = whole
        for members in groups.values():
            q = _stack([query if t is None else query[:, t] for _, t, _ in members])
            region_context: Any = _stack([e.expand(b, -1, -1) for _, _, e in members])
            if isinstance(context, tuple):  # IP-Adapter: (text, [image tokens per adapter])
                images = _repeat_rows(last_rows(tuple(context[1:]), n, b), len(members))
                region_context = (region_context, *images)
            results = self._call_processor(module, q, region_context, rest).split(b)
            for (k, tokens, _), result in zip(members, results, strict=True):
                mixed = add_region(mixed, whole, result, shares[k], tokens)
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
