"""README's SDXL example runs as written, on the micro world instead of SDXL + bigG."""

from __future__ import annotations

import re
from pathlib import Path

import torch
from diffusers import StableDiffusionXLPipeline

import clipguide
from clipguide.shapes import pipeline as shapes_pipeline

README = Path(__file__).resolve().parents[1] / "README.md"


def _example() -> str:
    text = README.read_text()
    section = text.split("## SDXL + bigG in ten lines", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_example_is_short_and_uses_one_bigg_load():
    code = _example()
    lines = [line for line in code.splitlines() if line.strip()]
    assert len(lines) <= 12
    assert code.count("load_clip(") == 1 and "load_clip(pipe)" in code
    for api in ("encode_prompt", "CLIPGuidance", "CLIPScorer"):
        assert api in code


def test_readme_example_runs_on_the_micro_world(monkeypatch):
    micro = shapes_pipeline()
    micro.set_progress_bar_config(disable=True)
    calls = []

    def from_pretrained(repo_id, **kwargs):
        calls.append(repo_id)
        return micro

    monkeypatch.setattr(StableDiffusionXLPipeline, "from_pretrained", staticmethod(from_pretrained))
    code = _example().replace('"cuda"', '"cpu"')
    code = code.replace(
        "num_images_per_prompt=4,",
        "num_images_per_prompt=2, num_inference_steps=8, height=64, width=64,",
    )
    scope: dict = {}
    exec(compile(code, str(README), "exec"), scope)  # noqa: S102 - the README's own code
    assert calls == ["stabilityai/stable-diffusion-xl-base-1.0"]
    assert scope["clip"].text_model is micro.text_encoder_2  # one text tower, shared
    assert len(scope["images"]) == 2
    assert scope["best"] is scope["images"][scope["ranking"].indices[0]]
    assert isinstance(scope["cond"], clipguide.Conditioning)
    assert len(scope["guidance"].history) > 0  # the guidance really ran in the loop
    assert torch.isfinite(scope["ranking"].scores).all()
