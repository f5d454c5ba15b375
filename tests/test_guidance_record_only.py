"""``scale=0, record=True`` measures an unguided run without changing it, in both modes."""

from __future__ import annotations

import pytest
import torch

from clipguide.guidance import CLIPGuidance

WINDOW = dict(start=0.0, stop=1.0, every=1)


def _run(pipe, guidance=None):
    kw = dict(
        prompt=["a red circle", "a blue square"],
        num_inference_steps=3,
        generator=torch.Generator().manual_seed(0),
        output_type="pt",
        guidance_scale=5.0,
    )
    if guidance is None:
        return pipe(**kw).images
    with guidance.attach(pipe):
        return pipe(**kw).images


@pytest.mark.parametrize("mode", ["fast", "full"])
def test_record_only_is_bit_identical_and_records_every_step(pipe, clip, mode):
    base = _run(pipe)
    watcher = CLIPGuidance(clip, mode=mode, scale=0, record=True, **WINDOW)
    assert torch.equal(_run(pipe, watcher), base)
    assert [r["step"] for r in watcher.history] == [0, 1, 2]
    assert all(len(r["similarity"]) == 2 and not any(r["skipped"]) for r in watcher.history)


@pytest.mark.parametrize("mode", ["fast", "full"])
def test_record_only_measures_what_a_guided_run_measures(pipe, clip, mode):
    """Step 0 sees the same latents guided or not: the records agree (``full`` measures the
    conditional prediction's x0, which its extra UNet pass recomputes)."""
    watcher = CLIPGuidance(clip, mode=mode, scale=0, record=True, **WINDOW)
    guided = CLIPGuidance(clip, mode=mode, scale=1.0, **WINDOW)
    _run(pipe, watcher)
    _run(pipe, guided)
    for key in ("similarity", "loss"):
        torch.testing.assert_close(
            torch.tensor(watcher.history[0][key]),
            torch.tensor(guided.history[0][key]),
            atol=1e-4,
            rtol=1e-4,
        )
