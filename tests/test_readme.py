"""README's SDXL example runs as written, on the micro world instead of SDXL + bigG."""

from __future__ import annotations

import re
from pathlib import Path

import torch
from diffusers import StableDiffusionXLPipeline
from transformers import CLIPTextModelWithProjection, CLIPVisionModelWithProjection

import clipguide
from clipguide.shapes import pipeline as shapes_pipeline

README = Path(__file__).resolve().parents[1] / "README.md"


def _example() -> str:
    text = README.read_text()
    section = text.split("## SDXL + bigG in ten lines", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


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
    built = []  # every CLIP tower constructed while the example runs
    for cls in (CLIPTextModelWithProjection, CLIPVisionModelWithProjection):
        init = cls.__init__

        def spy(self, *args, _init=init, _name=cls.__name__, **kwargs):
            built.append(_name)
            _init(self, *args, **kwargs)

        monkeypatch.setattr(cls, "__init__", spy)
    scope: dict = {}
    exec(compile(code, str(README), "exec"), scope)  # noqa: S102 - the README's own code
    # one bigG load: the text tower is the pipeline's own, only a vision tower is built
    assert built == ["CLIPVisionModelWithProjection"]
    assert calls == ["stabilityai/stable-diffusion-xl-base-1.0"]
    assert scope["clip"].text_model is micro.text_encoder_2  # one text tower, shared
    assert len(scope["images"]) == 2
    assert scope["best"] is scope["images"][scope["ranking"].indices[0]]
    assert isinstance(scope["cond"], clipguide.Conditioning)
    assert len(scope["guidance"].history) > 0  # the guidance really ran in the loop
    assert torch.isfinite(scope["ranking"].scores).all()


def _block_after(heading: str) -> str:
    section = README.read_text().split(heading, 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_one_prompt_and_regions_examples_run_on_the_micro_world():
    """The "One prompt, all the way through" and "Regions and layouts" blocks, on the micro world
    (fewer steps, 64 px), with the names the ten-line example defines."""
    pipe = shapes_pipeline()
    pipe.set_progress_bar_config(disable=True)
    clip = clipguide.load_clip(pipe)
    scope: dict = {"pipe": pipe, "clip": clip, "clipguide": clipguide, "torch": torch}
    one = _block_after("### One prompt, all the way through")
    one = one.replace("num_inference_steps=30", "num_inference_steps=6, height=64, width=64")
    exec(compile(one, str(README), "exec"), scope)  # noqa: S102 - the README's own code
    assert scope["cond"].prompt == ("a red fox in the snow golden hour, 35mm",)
    assert len(scope["best"].images) == 4 and scope["best"].prompt == scope["cond"].prompt[0]
    regions = _block_after("## Regions and layouts").replace(
        "height=768, width=1344", "height=64, width=96, num_inference_steps=6"
    )
    exec(compile(regions, str(README), "exec"), scope)  # noqa: S102
    assert scope["image"].size == (96, 64)
    assert "_clipguide_hooks" not in vars(pipe)  # detached: no registry left on the pipeline
