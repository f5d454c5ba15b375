"""Bad input to guidance and best-of-N: a clear error at the call, naming argument and value.

Each case gives the call, the exception type, the argument the message must name and how the
received value must appear in it. Nothing here reaches a pipeline run: every check is cheap and
happens before any work.
"""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest
import torch
from diffusers import CMStochasticIterativeScheduler, EDMEulerScheduler

from clipguide import CLIPScorer, best_of_n
from clipguide.guidance import (
    CLIPGuidance,
    CLIPGuidanceLoopStep,
    GuidanceSettings,
    LinearLatentDecoder,
    add_to_modular_sdxl,
)
from clipguide.testing import tiny_clip, tiny_sd_pipeline

INF, NAN = float("inf"), float("nan")


@pytest.fixture(scope="module")
def ctx():
    pipe = tiny_sd_pipeline()
    pipe.set_progress_bar_config(disable=True)
    clip = tiny_clip(seed=5)
    return SimpleNamespace(
        clip=clip,
        dim=clip.embed_dim,
        vision_only=tiny_clip(seed=5, towers=("vision",)),
        text_only=tiny_clip(seed=5, towers=("text",)),
        pipe=pipe,
    )


def guide(**kwargs):
    return lambda c: CLIPGuidance(c.clip, **kwargs)


def target(make):
    return lambda c: CLIPGuidance(c.clip, target=make(c))


def with_scheduler(scheduler):
    def call(c):
        pipe = tiny_sd_pipeline(scheduler=scheduler)
        CLIPGuidance(c.clip).attach(pipe)

    return call


def attach_twice(c):
    guidance = CLIPGuidance(c.clip)
    with guidance.attach(c.pipe):
        guidance.attach(c.pipe)


def unet_replaced(c):
    pipe = tiny_sd_pipeline()
    with CLIPGuidance(c.clip).attach(pipe):
        pipe.unet = tiny_sd_pipeline(seed=1).unet
        CLIPGuidance(c.clip).attach(pipe)


def modular_twice(c):
    from diffusers.modular_pipelines import StableDiffusionXLAutoBlocks

    blocks = StableDiffusionXLAutoBlocks()
    add_to_modular_sdxl(blocks, CLIPGuidance(c.clip))
    add_to_modular_sdxl(blocks, CLIPGuidance(c.clip))


def modular_pipeline(c):
    from diffusers.modular_pipelines import StableDiffusionXLAutoBlocks

    CLIPGuidance(c.clip).attach(StableDiffusionXLAutoBlocks().init_pipeline())


class FakePipe:
    """Returns ``count`` (default: as asked) solid images, or an output without ``images``."""

    def __init__(self, count=None, images=True):
        self.count, self.images = count, images

    def __call__(self, prompt, num_images_per_prompt, generator, **kwargs):
        n = self.count if self.count is not None else num_images_per_prompt
        out = [torch.rand(3, 4, 4) for _ in range(n)]
        return SimpleNamespace(images=out) if self.images else SimpleNamespace(samples=out)


class FakeScorer:
    def score(self, images, prompt):
        return torch.stack([i.mean() for i in images])


def bon(pipe=None, prompt="red", n=2, scorer=None, **kwargs):
    kwargs.setdefault("progress", False)
    return lambda c: best_of_n(
        pipe or FakePipe(), prompt, n, scorer if scorer is not None else FakeScorer(), **kwargs
    )


# (id, call, exception, argument named, received value as shown)
CASES = [
    # -- CLIPGuidance numeric settings -----------------------------------------------------
    ("scale_negative", guide(scale=-1), ValueError, "scale", "-1"),
    ("scale_inf", guide(scale=INF), ValueError, "scale", "inf"),
    ("scale_nan", guide(scale=NAN), ValueError, "scale", "nan"),
    ("scale_str", guide(scale="4"), ValueError, "scale", "'4'"),
    ("scale_bool", guide(scale=True), ValueError, "scale", "True"),
    ("mode_unknown", guide(mode="slow"), ValueError, "mode", "'slow'"),
    ("mode_none", guide(mode=None), ValueError, "mode", "None"),
    ("views_zero", guide(views=0), ValueError, "views", "0"),
    ("views_float", guide(views=1.5), ValueError, "views", "1.5"),
    ("views_bool", guide(views=True), ValueError, "views", "True"),
    ("start_negative", guide(start=-0.1), ValueError, "start", "-0.1"),
    ("start_one", guide(start=1.0, stop=1.0), ValueError, "start", "1.0"),
    ("start_nan", guide(start=NAN), ValueError, "start", "nan"),
    ("stop_equals_start", guide(start=0.5, stop=0.5), ValueError, "stop", "0.5"),
    ("stop_above_one", guide(stop=1.5), ValueError, "stop", "1.5"),
    ("stop_inf", guide(stop=INF), ValueError, "stop", "inf"),
    ("every_zero", guide(every=0), ValueError, "every", "0"),
    ("every_float", guide(every=2.0), ValueError, "every", "2.0"),
    ("normalize_str", guide(normalize="yes"), ValueError, "normalize", "'yes'"),
    ("flip_int", guide(flip=1), ValueError, "flip", "1"),
    ("checkpointing_none", guide(checkpointing=None), ValueError, "checkpointing", "None"),
    ("max_rms_zero", guide(max_rms=0), ValueError, "max_rms", "0"),
    ("max_rms_inf", guide(max_rms=INF), ValueError, "max_rms", "inf"),
    ("max_rms_nan", guide(max_rms=NAN), ValueError, "max_rms", "nan"),
    ("min_crop_zero", guide(min_crop=0), ValueError, "min_crop", "0"),
    ("min_crop_above_one", guide(min_crop=1.5), ValueError, "min_crop", "1.5"),
    ("noise_negative", guide(noise=-0.1), ValueError, "noise", "-0.1"),
    ("noise_inf", guide(noise=INF), ValueError, "noise", "inf"),
    ("seed_float", guide(seed=1.5), ValueError, "seed", "1.5"),
    ("seed_too_large", guide(seed=2**64), ValueError, "seed", str(2**64)),
    ("seed_str", guide(seed="0"), ValueError, "seed", "'0'"),
    ("decode_size_zero", guide(decode_size=0), ValueError, "decode_size", "0"),
    ("decode_size_float", guide(decode_size=8.0), ValueError, "decode_size", "8.0"),
    ("decode_size_str", guide(decode_size="full"), ValueError, "decode_size", "'full'"),
    ("decode_chunk_zero", guide(decode_chunk=0), ValueError, "decode_chunk", "0"),
    ("decode_chunk_float", guide(decode_chunk=1.0), ValueError, "decode_chunk", "1.0"),
    ("decode_chunk_bool", guide(decode_chunk=True), ValueError, "decode_chunk", "True"),
    ("record_str", guide(scale=0, record="yes"), ValueError, "record", "'yes'"),
    ("on_step_int", guide(on_step=5), ValueError, "on_step", "5"),
    ("decoder_int", guide(decoder=5), ValueError, "decoder", "5"),
    (
        "decoder_without_scaling",
        guide(decoder=SimpleNamespace(decode=lambda z: z)),
        ValueError,
        "decoder",
        "namespace(decode=",
    ),
    ("settings_nan", lambda c: GuidanceSettings(scale=NAN), ValueError, "scale", "nan"),
    ("settings_every", lambda c: GuidanceSettings(every=-1), ValueError, "every", "-1"),
    (
        "replace_bad_views",
        lambda c: CLIPGuidance(c.clip).replace(views=0),
        ValueError,
        "views",
        "0",
    ),
    # -- targets -----------------------------------------------------------------------------
    ("target_int", target(lambda c: 3), ValueError, "target", "3"),
    ("target_empty_list", target(lambda c: []), ValueError, "target", "[]"),
    ("target_empty_str", target(lambda c: "  "), ValueError, "target", "'  '"),
    ("target_list_with_empty", target(lambda c: ["a", ""]), ValueError, "target", "['a', '']"),
    ("target_list_with_int", target(lambda c: ["a", 3]), ValueError, "target", "['a', 3]"),
    ("target_wrong_width", target(lambda c: torch.randn(7)), ValueError, "target", "shape=(7,)"),
    (
        "target_3d",
        target(lambda c: torch.randn(2, 3, c.dim)),
        ValueError,
        "target",
        "shape=(2, 3, 32)",
    ),
    ("target_no_rows", target(lambda c: torch.empty(0, c.dim)), ValueError, "target", "(0, 32)"),
    ("target_zero_row", target(lambda c: torch.zeros(c.dim)), ValueError, "target", "(32,)"),
    (
        "target_nan",
        target(lambda c: torch.full((c.dim,), NAN)),
        ValueError,
        "target",
        "shape=(32,)",
    ),
    (
        "target_integer_tensor",
        target(lambda c: torch.ones(c.dim, dtype=torch.long)),
        ValueError,
        "target",
        "torch.int64",
    ),
    # -- the CLIP ----------------------------------------------------------------------------
    ("clip_none", lambda c: CLIPGuidance(None), TypeError, "clip", "None"),
    ("clip_text_only", lambda c: CLIPGuidance(c.text_only), TypeError, "clip", "<CLIP>"),
    (
        "prompt_target_without_text_tower",
        lambda c: CLIPGuidance(c.vision_only),
        ValueError,
        "target",
        "None",
    ),
    (
        "text_target_without_text_tower",
        lambda c: CLIPGuidance(c.vision_only, target="a red circle"),
        ValueError,
        "target",
        "'a red circle'",
    ),
    # -- attach ------------------------------------------------------------------------------
    ("attach_none", lambda c: CLIPGuidance(c.clip).attach(None), TypeError, "pipe", "None"),
    ("attach_str", lambda c: CLIPGuidance(c.clip).attach("sdxl"), TypeError, "pipe", "'sdxl'"),
    ("attach_unet", lambda c: CLIPGuidance(c.clip).attach(c.pipe.unet), TypeError, "pipe", "<UNet"),
    ("attach_modular", modular_pipeline, TypeError, "pipe", "ModularPipeline>"),
    ("scheduler_edm", with_scheduler(EDMEulerScheduler()), ValueError, "scheduler", "EDMEuler"),
    (
        "scheduler_consistency",
        with_scheduler(CMStochasticIterativeScheduler()),
        ValueError,
        "scheduler",
        "CMStochasticIterativeScheduler",
    ),
    ("attached_twice", attach_twice, RuntimeError, "pipe", "StableDiffusionPipeline"),
    ("unet_replaced", unet_replaced, ValueError, "pipe", "StableDiffusionPipeline.unet"),
    # -- modular -----------------------------------------------------------------------------
    ("loop_step_str", lambda c: CLIPGuidanceLoopStep("g"), TypeError, "guidance", "'g'"),
    (
        "loop_step_full",
        lambda c: CLIPGuidanceLoopStep(CLIPGuidance(c.clip, mode="full")),
        ValueError,
        "mode",
        "'full'",
    ),
    (
        "modular_blocks_none",
        lambda c: add_to_modular_sdxl(None, CLIPGuidance(c.clip)),
        ValueError,
        "blocks",
        "None",
    ),
    (
        "modular_guidance_str",
        lambda c: add_to_modular_sdxl(None, "g"),
        TypeError,
        "guidance",
        "'g'",
    ),
    ("modular_twice", modular_twice, ValueError, "blocks", "<StableDiffusionXLAutoBlocks>"),
    # -- the linear decoder ------------------------------------------------------------------
    ("linear_channels", lambda c: LinearLatentDecoder(0), ValueError, "latent_channels", "0"),
    ("linear_factor", lambda c: LinearLatentDecoder(4, 2.5), ValueError, "factor", "2.5"),
    (
        "linear_fit_images",
        lambda c: LinearLatentDecoder.fit(c.pipe.vae, torch.rand(2, 1, 8, 8)),
        ValueError,
        "images",
        "(2, 1, 8, 8)",
    ),
    # -- best_of_n ---------------------------------------------------------------------------
    ("bon_pipe_none", lambda c: best_of_n(None, "red", 2, FakeScorer()), TypeError, "pipe", "None"),
    ("bon_prompt_int", bon(prompt=3), TypeError, "prompt", "3"),
    ("bon_prompt_empty", bon(prompt=" "), ValueError, "prompt", "' '"),
    ("bon_n_zero", bon(n=0), ValueError, "n", "0"),
    ("bon_n_bool", bon(n=True), ValueError, "n", "True"),
    ("bon_n_float", bon(n=2.0), ValueError, "n", "2.0"),
    ("bon_scorer_none", lambda c: best_of_n(FakePipe(), "r", 2, None), TypeError, "scorer", "None"),
    ("bon_batch_size", bon(batch_size=None), ValueError, "batch_size", "None"),
    ("bon_seed_float", bon(seed=1.5), ValueError, "seed", "1.5"),
    ("bon_seed_too_large", bon(seed=2**64), ValueError, "seed", str(2**64)),
    ("bon_generator_int", bon(generator=5), TypeError, "generator", "5"),
    ("bon_generator_device", bon(generator_device="gpu"), ValueError, "generator_device", "'gpu'"),
    ("bon_robust_str", bon(robust="yes"), TypeError, "robust", "'yes'"),
    ("bon_progress_none", bon(progress=None), TypeError, "progress", "None"),
    ("bon_output_latent", bon(output_type="latent"), ValueError, "output_type", "'latent'"),
    (
        "bon_too_few_images",
        bon(pipe=FakePipe(count=1), batch_size=2),
        ValueError,
        "pipe",
        "returned 1 images",
    ),
    ("bon_no_images", bon(pipe=FakePipe(images=False)), TypeError, "pipe", "SimpleNamespace"),
    ("bon_reserved_kwarg", bon(num_images_per_prompt=2), ValueError, "num_images_per_prompt", "=2"),
]


@pytest.mark.parametrize(
    ("call", "error", "argument", "shown"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_input_is_a_clear_error(ctx, call, error, argument, shown):
    with pytest.raises(error) as info:
        call(ctx)
    message = str(info.value)
    assert re.search(rf"(?<![\w.]){re.escape(argument)}\b", message), message
    assert shown in message, message


def test_case_count():
    """The battery the report quotes: its size and the split by outcome."""
    assert len(CASES) >= 40
    assert len({c[0] for c in CASES}) == len(CASES)


def test_documented_fallbacks(ctx):
    """Accepted on purpose: numpy numbers and ints for float settings, stored as Python types."""
    import numpy as np

    settings = CLIPGuidance(ctx.clip, scale=np.float32(2), views=np.int64(2), every=3).settings
    assert settings.scale == 2.0 and type(settings.scale) is float
    assert settings.views == 2 and type(settings.views) is int
    scorer = CLIPScorer(ctx.clip)
    assert best_of_n(FakePipe(), "red", 1, scorer, seed=-1, progress=False).seeds == [-1]
