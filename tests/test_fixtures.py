"""The offline fixtures build real diffusers pipelines that run end to end."""

import torch

from clipguide.testing import tiny_sd_pipeline, tiny_sdxl_pipeline, tiny_sdxl_pipeline_bigg_only


def _run(pipe, **kw):
    out = pipe(
        "a red circle above a blue square",
        num_inference_steps=3,
        height=16,
        width=16,
        output_type="pt",
        generator=torch.Generator().manual_seed(0),
        **kw,
    )
    return out.images


def test_tiny_sdxl_runs_end_to_end_and_is_deterministic():
    pipe = tiny_sdxl_pipeline()
    pipe.set_progress_bar_config(disable=True)
    a, b = _run(pipe), _run(pipe)
    assert a.shape == (1, 3, 16, 16) and torch.isfinite(a).all()
    assert a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, b)
    c = _run(pipe, negative_prompt="green")
    assert not torch.equal(a, c)  # the conditioning reaches the UNet


def test_tiny_bigg_only_and_sd_pipelines_run():
    for pipe in (tiny_sdxl_pipeline_bigg_only(), tiny_sd_pipeline()):
        pipe.set_progress_bar_config(disable=True)
        img = _run(pipe)
        assert img.shape == (1, 3, 16, 16) and torch.isfinite(img).all()
