"""The diffusers custom pipeline under pipelines/clip_guided loads offline and guides."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import DiffusionPipeline

from clipguide.guidance import CLIPGuidance
from clipguide.testing import tiny_clip, tiny_sdxl_pipeline

FOLDER = Path(__file__).resolve().parents[1] / "pipelines" / "clip_guided"


def test_custom_pipeline_loads_from_folder_and_matches_attach(tmp_path):
    tiny_sdxl_pipeline().save_pretrained(tmp_path / "tiny")
    index = json.loads((tmp_path / "tiny" / "model_index.json").read_text())
    assert index["tokenizer_2"] == ["transformers", "CLIPTokenizer"]  # as real SDXL repos
    pipe = DiffusionPipeline.from_pretrained(
        tmp_path / "tiny", custom_pipeline=str(FOLDER), trust_remote_code=True
    )
    assert type(pipe).__name__ == "CLIPGuidedStableDiffusionXLPipeline"
    pipe.set_progress_bar_config(disable=True)
    clip = tiny_clip(seed=5)

    def run(**extra):
        return pipe(
            "a red circle",
            num_inference_steps=2,
            generator=torch.Generator().manual_seed(0),
            output_type="pt",
            **extra,
        ).images

    base = run()
    guided = run(clip_guidance=CLIPGuidance(clip, scale=1.0, start=0.0, stop=1.0, every=1))
    with CLIPGuidance(clip, scale=1.0, start=0.0, stop=1.0, every=1).attach(pipe):
        attached = run()
    assert not torch.equal(guided, base)
    assert torch.equal(guided, attached)
    assert torch.equal(run(), base)  # nothing left attached
