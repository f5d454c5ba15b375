"""Offline fixtures for tests and benchmarks: tiny random CLIPs and diffusers pipelines built
from configs (no hub). Never imported by the library (tests/test_layout.py checks it); the tests
register the tiny config themselves (tests/conftest.py).

The tiny open_clip config ``clipguide-tiny`` keeps the ViT-bigG-14 structure (pre-norm ViT with
CLS pooling, causal text transformer, real 49,408-token vocabulary, context 77) at toy widths.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    EulerDiscreteScheduler,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel

from clipguide.model import load_clip
from clipguide.model.clip import CLIP
from clipguide.model.tokenizer import offline_tokenizer

__all__ = [
    "TINY_MODEL",
    "register_model_configs",
    "tiny_openclip_model",
    "tiny_clip",
    "save_openclip_dir",
    "tiny_sdxl_pipeline",
    "tiny_sdxl_pipeline_bigg_only",
    "tiny_sd_pipeline",
    "offline_tokenizer",
    "torchmetrics_clipscore",
    "SavedActivations",
]

TINY_MODEL = "clipguide-tiny"
_CONFIG_DIR = Path(__file__).parent / "model_configs"


def register_model_configs() -> None:
    """Make clipguide's open_clip configs (``clipguide-tiny``) known to open_clip."""
    import open_clip

    if open_clip.get_model_config(TINY_MODEL) is None:
        open_clip.add_model_config(_CONFIG_DIR)


def tiny_openclip_model(seed: int = 0, std: float = 0.05):
    """A random open_clip ``CLIP`` with the tiny config (weights ~N(0, std) for spread)."""
    import open_clip

    register_model_configs()
    torch.manual_seed(seed)
    model = open_clip.create_model(TINY_MODEL, pretrained=None)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(
                ("ln_1.weight", "ln_2.weight", "ln_pre.weight", "ln_post.weight", "ln_final.weight")
            ):
                continue
            p.copy_(torch.randn(p.shape, generator=gen) * std)
    return model.eval()


def save_openclip_dir(model, folder: str | Path, model_cfg: dict | None = None) -> Path:
    """Save an open_clip model as an open_clip ``local-dir:`` folder."""
    import json

    import open_clip
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cfg = model_cfg or open_clip.get_model_config(TINY_MODEL)
    (folder / "open_clip_config.json").write_text(
        json.dumps(
            {"model_cfg": cfg, "preprocess_cfg": dict(model.visual.preprocess_cfg)}, indent=2
        )
    )
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()},
        folder / "open_clip_model.safetensors",
    )
    return folder


def tiny_clip(seed: int = 0, towers: tuple[str, ...] = ("text", "vision")) -> CLIP:
    """A tiny random CLIP (bigG structure) in clipguide's layout."""
    return load_clip(tiny_openclip_model(seed), towers=towers)


def _tiny_unet(cross_attention_dim: int, pooled_dim: int | None, seed: int) -> UNet2DConditionModel:
    torch.manual_seed(seed)
    extra = {}
    if pooled_dim is not None:  # SDXL-style micro-conditioning on pooled text + 6 time ids
        extra = dict(
            addition_embed_type="text_time",
            addition_time_embed_dim=8,
            projection_class_embeddings_input_dim=pooled_dim + 6 * 8,
        )
    return UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        cross_attention_dim=cross_attention_dim,
        norm_num_groups=8,
        **extra,
    )


def _tiny_vae(seed: int) -> AutoencoderKL:
    torch.manual_seed(seed)
    return AutoencoderKL(
        block_out_channels=(16, 32),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        norm_num_groups=8,
        sample_size=16,
    )


def _tiny_clip_l(seed: int) -> CLIPTextModel:
    """A CLIP-L-like first text encoder (quick_gelu, legacy argmax pooling)."""
    torch.manual_seed(seed)
    cfg = CLIPTextConfig(
        vocab_size=49408,
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        hidden_act="quick_gelu",
        bos_token_id=0,
        eos_token_id=2,
        pad_token_id=1,
        projection_dim=32,
    )
    return CLIPTextModel(cfg).eval()


def _sdxl_scheduler() -> EulerDiscreteScheduler:
    """SDXL's default sampler and noise schedule."""
    return EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        timestep_spacing="leading",
        steps_offset=1,
    )


def _tiny_sdxl(seed: int, scheduler, with_clip_l: bool) -> StableDiffusionXLPipeline:
    text2 = tiny_clip(seed, towers=("text",))
    cfg = text2.text_model.config
    te1 = _tiny_clip_l(seed + 1) if with_clip_l else None
    width = cfg.hidden_size + (te1.config.hidden_size if te1 is not None else 0)
    return StableDiffusionXLPipeline(
        vae=_tiny_vae(seed + 3),
        text_encoder=te1,
        text_encoder_2=text2.text_model,
        # plain CLIPTokenizers, as SDXL repos ship them (save_pretrained/from_pretrained work)
        tokenizer=offline_tokenizer(open_clip_cleaning=False) if with_clip_l else None,
        tokenizer_2=offline_tokenizer(open_clip_cleaning=False),
        unet=_tiny_unet(width, cfg.projection_dim, seed + 2),
        scheduler=scheduler or _sdxl_scheduler(),
        add_watermarker=False,
    )


def tiny_sdxl_pipeline(seed: int = 0, scheduler=None) -> StableDiffusionXLPipeline:
    """A tiny SDXL base pipeline: CLIP-L-like + bigG-like (``tiny_clip``) text encoders, 16 px."""
    return _tiny_sdxl(seed, scheduler, with_clip_l=True)


def tiny_sdxl_pipeline_bigg_only(seed: int = 0, scheduler=None) -> StableDiffusionXLPipeline:
    """A tiny SDXL pipeline whose only text encoder is bigG-like (``text_encoder=None``)."""
    return _tiny_sdxl(seed, scheduler, with_clip_l=False)


def tiny_sd_pipeline(seed: int = 0, scheduler=None) -> StableDiffusionPipeline:
    """A tiny SD-1.5-style pipeline (one CLIP-L-like text encoder), 16 px."""
    from diffusers import PNDMScheduler

    te = _tiny_clip_l(seed + 1)
    return StableDiffusionPipeline(
        vae=_tiny_vae(seed + 3),
        text_encoder=te,
        tokenizer=offline_tokenizer(open_clip_cleaning=False),
        unet=_tiny_unet(te.config.hidden_size, None, seed + 2),
        scheduler=scheduler
        or PNDMScheduler(
            beta_start=0.00085,
            beta_end=0.012,
            beta_schedule="scaled_linear",
            skip_prk_steps=True,
            steps_offset=1,
        ),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def torchmetrics_clipscore(clip: CLIP):
    """torchmetrics' ``CLIPScore`` fed a transformers ``CLIPModel`` holding ``clip``'s weights.

    The reference scorer for tests and benchmarks (needs the dev extra's torchmetrics).
    transformers 5 returns output objects from ``get_*_features``; torchmetrics wants tensors.
    """
    from torchmetrics.multimodal.clip_score import CLIPScore
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    class FeatureTensors(CLIPModel):
        def get_text_features(self, *args, **kwargs):
            return super().get_text_features(*args, **kwargs).pooler_output

        def get_image_features(self, *args, **kwargs):
            return super().get_image_features(*args, **kwargs).pooler_output

    text_cfg, vision_cfg = clip.text_model.config, clip.vision_model.config
    config = CLIPConfig(
        text_config=text_cfg.to_dict(),
        vision_config=vision_cfg.to_dict(),
        projection_dim=text_cfg.projection_dim,
    )
    model = FeatureTensors(config).eval()
    missing, unexpected = model.load_state_dict(
        {**clip.text_model.state_dict(), **clip.vision_model.state_dict()}, strict=False
    )
    if missing != ["logit_scale"] or unexpected:
        raise KeyError(f"weights do not fit CLIPModel: missing {missing}, unexpected {unexpected}")
    model.to(device=clip.device, dtype=clip.dtype)
    pre = clip.preprocess
    processor = CLIPProcessor(
        image_processor=CLIPImageProcessor(
            size={"shortest_edge": pre.image_size},
            crop_size={"height": pre.image_size, "width": pre.image_size},
            image_mean=list(pre.mean),
            image_std=list(pre.std),
        ),
        tokenizer=clip.tokenizer,
    )
    return CLIPScore(model_name_or_path=lambda: (model, processor)).to(clip.device)


class SavedActivations:
    """Bytes of the tensors autograd keeps for backward passes, live and at their peak.

    A context manager over ``torch.autograd.graph.saved_tensors_hooks``: each saved tensor is
    counted when a graph saves it and uncounted when that graph is freed (by its backward or
    by going out of scope), so ``peak`` is what a step holds at once, e.g. one chunk's graph
    when guidance decodes chunk by chunk. Weights that layers save (parameters, or views of
    them) cost no memory of their own and count in ``weights`` only; ``total`` sums every saved
    tensor, weights included, freed or not. Works on meta tensors (no memory, no weights).
    """

    def __init__(self) -> None:
        self.live = self.peak = self.total = self.weights = 0
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack)

    def _pack(self, tensor: torch.Tensor) -> _Saved:
        return _Saved(self, tensor)

    @staticmethod
    def _unpack(saved: _Saved) -> torch.Tensor:
        return saved.tensor

    def __enter__(self) -> SavedActivations:
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._hooks.__exit__(*exc)


class _Saved:
    """One saved tensor, counted while autograd holds it."""

    def __init__(self, meter: SavedActivations, tensor: torch.Tensor) -> None:
        self.meter, self.tensor = meter, tensor
        size = tensor.numel() * tensor.element_size()
        meter.total += size
        weight = (tensor, getattr(tensor, "_base", None))
        if any(isinstance(t, torch.nn.Parameter) for t in weight):
            meter.weights += size
            size = 0
        self.bytes = size
        meter.live += size
        meter.peak = max(meter.peak, meter.live)

    def __del__(self) -> None:
        self.meter.live -= self.bytes
