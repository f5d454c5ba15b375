"""Devices and dtypes follow the pipeline (no GPU here: "meta" stands in for the accelerator).

A module "borrowed" to meta loses its data; the test helper ``_borrowable`` restores the saved
weights when it is moved back, exactly as a real round trip to a GPU and back would leave them,
and records every device move.
"""

from __future__ import annotations

import math

import pytest
import torch

from clipguide import CLIPScorer, best_of_n, load_clip
from clipguide.guidance import CLIPGuidance
from clipguide.guidance.schedulers import NoiseLevel
from clipguide.testing import tiny_clip, tiny_openclip_model, tiny_sdxl_pipeline

CPU, META = torch.device("cpu"), torch.device("meta")
FP32, FP16 = torch.float32, torch.float16
PROMPTS = ["a red circle", "a blue square"]


def _borrowable(monkeypatch, module: torch.nn.Module) -> list[str]:
    """Spy on ``module.to``: record device moves; moving off meta restores the saved tensors."""
    saved = {
        k: v.detach().clone() for k, v in [*module.named_parameters(), *module.named_buffers()]
    }
    real_to = module.to
    moves: list[str] = []

    def to(*args, **kwargs):
        device, dtype, *_ = torch._C._nn._parse_to(*args, **kwargs)
        if device is not None:
            moves.append(device.type)
        here = next(module.parameters()).device
        if device is not None and device.type != "meta" and here.type == "meta":
            module.to_empty(device=device)
            with torch.no_grad():
                for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
                    tensor.copy_(saved[name])
            return real_to(dtype=dtype) if dtype is not None else module
        return real_to(*args, **kwargs)

    monkeypatch.setattr(module, "to", to)
    module.saved_for_test = saved
    return moves


def _intact(module: torch.nn.Module) -> bool:
    current = dict([*module.named_parameters(), *module.named_buffers()])
    return all(
        current[k].device == CPU and torch.equal(current[k], v)
        for k, v in module.saved_for_test.items()
    )


def _pipeline_clip(**kwargs):
    pipe = tiny_sdxl_pipeline()
    pipe.set_progress_bar_config(disable=True)
    return pipe, load_clip(pipe, vision=tiny_openclip_model(seed=5), **kwargs)


def _fake_execution_device(monkeypatch, pipe, device):
    monkeypatch.setattr(type(pipe), "_execution_device", property(lambda self: device))


# -- the placement rule ---------------------------------------------------------------------
def test_plan_placement_rules():
    from clipguide.model.clip import Placement, plan_placement, same_device

    cuda = torch.device("cuda")
    assert plan_placement(CPU, FP32) == Placement(CPU, CPU, FP32)
    assert plan_placement(CPU, FP32, work=cuda, stays=True, dtype=FP16) == Placement(
        cuda, cuda, FP16
    )
    assert plan_placement(CPU, FP32, work=cuda) == Placement(cuda, CPU, FP32)  # borrowed
    assert same_device("cuda", "cuda:0") and same_device(torch.device("cuda:1"), "cuda:1")
    assert not same_device("cuda:0", "cuda:1") and not same_device("cpu", "cuda")


def test_a_pipelines_clip_follows_its_device_and_dtype(monkeypatch):
    from clipguide.model.clip import Placement

    pipe, clip = _pipeline_clip()
    assert clip.placement() == Placement(CPU, CPU, FP32)
    pipe.to(dtype=torch.bfloat16)
    assert clip.placement().dtype == torch.bfloat16
    cuda = torch.device("cuda:0")
    _fake_execution_device(monkeypatch, pipe, cuda)
    assert clip.placement().work == cuda  # the text tower is not there: borrowed, not kept
    assert clip.placement().home == CPU


def test_under_model_offload_the_vision_tower_is_borrowed(monkeypatch):
    from clipguide.model.clip import Placement, same_device

    pipe, clip = _pipeline_clip()
    pipe.enable_model_cpu_offload(device="cpu")
    plan = clip.placement()  # the execution device is "cpu:0" now
    assert same_device(plan.work, CPU) and plan.home == CPU and plan.dtype == FP32
    _fake_execution_device(monkeypatch, pipe, torch.device("cuda"))
    assert clip.placement() == Placement(torch.device("cuda"), CPU, FP32)


def test_explicit_device_and_dtype_are_kept():
    pipe, clip = _pipeline_clip(dtype=torch.float32)
    pipe.to(dtype=torch.bfloat16)
    assert clip.placement().dtype == FP32


def test_vision_tower_for_a_meta_text_tower_is_made_on_the_cpu():
    """Sequential CPU offload keeps the text tower on meta; the vision tower needs real weights."""
    pipe = tiny_sdxl_pipeline()
    pipe.text_encoder_2.to("meta")
    clip = load_clip(pipe, vision=tiny_openclip_model(seed=5))
    reference = tiny_clip(seed=5)
    assert clip.vision_model.device == CPU
    assert torch.equal(
        clip.vision_model.vision_model.embeddings.patch_embedding.weight,
        reference.vision_model.vision_model.embeddings.patch_embedding.weight,
    )


# -- scoring --------------------------------------------------------------------------------
def test_scoring_follows_a_pipeline_moved_to_another_device():
    pipe, clip = _pipeline_clip()
    pipe.to("meta")
    embeds = CLIPScorer(clip).embed_images(torch.rand(2, 3, 16, 16))
    assert embeds.device == META and clip.vision_model.device == META  # stays with the pipe


def test_scoring_under_offload_borrows_the_execution_device(monkeypatch):
    pipe, clip = _pipeline_clip()
    pipe.enable_model_cpu_offload(device="cpu")
    _fake_execution_device(monkeypatch, pipe, META)
    moves = _borrowable(monkeypatch, clip.vision_model)
    embeds = CLIPScorer(clip).embed_images(torch.rand(2, 3, 16, 16))
    assert embeds.device == META and moves == ["meta", "cpu"] and _intact(clip.vision_model)


def test_scoring_and_guidance_follow_the_pipeline_dtype():
    pipe, clip = _pipeline_clip()
    pipe.to(dtype=torch.bfloat16)
    CLIPScorer(clip).score(torch.rand(1, 3, 16, 16), "a red circle")
    assert clip.vision_model.dtype == torch.bfloat16
    pipe.to(dtype=torch.float32)
    guidance = CLIPGuidance(clip, scale=1.0, start=0.0, stop=1.0, every=1)
    with guidance.attach(pipe):
        images = pipe("a red circle", num_inference_steps=2, output_type="pt").images
    assert clip.vision_model.dtype == FP32 and torch.isfinite(images).all()
    assert len(guidance.history) == 2


# -- the guided step ------------------------------------------------------------------------
def _guided_step_off_the_cpu(guidance, decoder):
    latents = torch.randn(2, 4, 8, 8, device=META)
    level = NoiseLevel(1.0, 1.0, 1 / math.sqrt(2.0), "epsilon", "sigma")
    targets = guidance.targets(2, PROMPTS)  # on the CPU, where the text tower is
    return guidance.gradient(latents, latents, level, targets, decoder=decoder)


@pytest.mark.parametrize("setup", ["standalone", "follows_pipeline", "model_offload"])
def test_guided_step_borrows_decoder_and_vision_and_returns_them(monkeypatch, setup):
    if setup == "standalone":
        pipe, clip = tiny_sdxl_pipeline(), tiny_clip(seed=5)
    else:
        pipe, clip = _pipeline_clip()
    guidance = CLIPGuidance(clip, scale=1.0, views=2)
    guidance.targets(2, PROMPTS)  # encode (and cache) the targets while the text tower is real
    if setup == "follows_pipeline":
        _fake_execution_device(monkeypatch, pipe, META)
    if setup == "model_offload":  # accelerate's own hooks, as if offloading to an accelerator
        pipe.enable_model_cpu_offload(device="cpu")
        for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
            getattr(pipe, name)._hf_hook.execution_device = META
        assert pipe._execution_device == META
    vae_moves = _borrowable(monkeypatch, pipe.vae)
    vision_moves = _borrowable(monkeypatch, clip.vision_model)
    grad, dist, sim = _guided_step_off_the_cpu(guidance, pipe.vae)
    assert grad.device == dist.device == sim.device == META and grad.shape == (2, 4, 8, 8)
    assert vision_moves == ["meta", "cpu"] and _intact(clip.vision_model)
    assert vae_moves[0] == "meta" and vae_moves[-1] == "cpu" and _intact(pipe.vae)


def test_model_cpu_offload_guides_as_without(monkeypatch):
    """Real accelerate hooks (to the CPU: the only device here) do not change a guided run."""
    pipe, clip = _pipeline_clip()

    def run():
        guidance = CLIPGuidance(clip, scale=1.0, start=0.0, stop=1.0, every=1)
        with guidance.attach(pipe):
            return pipe(
                PROMPTS,
                num_inference_steps=3,
                output_type="pt",
                generator=torch.Generator().manual_seed(0),
            ).images

    guided = run()
    pipe.enable_model_cpu_offload(device="cpu")
    assert hasattr(pipe.unet, "_hf_hook") and hasattr(pipe.vae, "_hf_hook")
    torch.testing.assert_close(run(), guided)


# -- tensors made next to their neighbours --------------------------------------------------
def test_linear_decoder_design_matrix_is_made_on_the_latents_device():
    from clipguide.guidance.linear_decoder import affine_design

    z = torch.randn(2, 4, 3, 3)
    design = affine_design(z)
    assert design.shape == (18, 5) and torch.equal(design[:, 4], torch.ones(18))
    torch.testing.assert_close(design[:, :4], z.permute(0, 2, 3, 1).reshape(-1, 4))
    assert affine_design(z.to("meta")).device == META


def test_best_of_n_draws_seeds_on_the_generators_device(monkeypatch):
    """A CUDA generator cannot fill a CPU tensor; torch refuses (mimicked here)."""

    class CudaGenerator(torch.Generator):
        @property
        def device(self):
            return torch.device("cuda")

    real_randint = torch.randint
    seen = []

    def randint(low, high, size, *, generator=None, device=None, **kwargs):
        wanted = torch.device(device) if device is not None else CPU
        if generator is not None and wanted.type != generator.device.type:
            raise RuntimeError(
                f"Expected a '{wanted.type}' device type for generator but found "
                f"'{generator.device.type}'"
            )
        seen.append(wanted.type)
        return real_randint(low, high, size, generator=generator, **kwargs)

    monkeypatch.setattr(torch, "randint", randint)

    class Pipe:
        def __call__(self, prompt, num_images_per_prompt, generator, **kwargs):
            images = [torch.rand(3, 4, 4, generator=g) for g in generator]
            return type("Out", (), {"images": images})()

    class Scorer:
        def score(self, images, prompt):
            return torch.stack([i.mean() for i in images])

    result = best_of_n(
        Pipe(), "red", 3, Scorer(), generator=CudaGenerator().manual_seed(0), progress=False
    )
    assert seen == ["cuda"] and len(result.seeds) == 3
