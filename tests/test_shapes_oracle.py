"""The oracle agrees with the generator's labels, also under blur, noise and colour shift."""

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter

from clipguide.shapes.oracle import check, detect
from clipguide.shapes.scenes import (
    TRAIN_FAMILIES,
    Group,
    Prompt,
    parse_prompt,
    render,
    sample_scene,
)

N_PER_FAMILY = 30


def _scenes(n=N_PER_FAMILY, offset=0):
    return [
        sample_scene(50_000 + offset + 97 * f + i, fam)
        for f, fam in enumerate(TRAIN_FAMILIES)
        for i in range(n)
    ]


def _blur(img, rng):
    return img.filter(ImageFilter.GaussianBlur(0.8))


def _noise(img, rng):
    arr = np.asarray(img).astype(float) + rng.normal(0, 8, (64, 64, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def _shift(img, rng):
    arr = np.asarray(img).astype(float) + rng.integers(-15, 16, 3)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def _all(img, rng):
    return _shift(_noise(_blur(img, rng), rng), rng)


def _agrees(scene, img) -> bool:
    det = detect(img)
    if len(det) != len(scene.objects) or not check(img, scene.caption).ok:
        return False
    for o in scene.objects:
        near = [d for d in det if abs(d.cx - o.cx) <= 1.5 and abs(d.cy - o.cy) <= 1.5]
        if len(near) != 1 or (near[0].shape, near[0].colour, near[0].size) != (
            o.shape,
            o.colour,
            o.size,
        ):
            return False
    return True


def test_agreement_on_clean_scenes_per_family():
    scenes = _scenes()
    for fam in TRAIN_FAMILIES:
        fs = [s for s in scenes if s.family == fam]
        rate = np.mean([_agrees(s, render(s)) for s in fs])
        assert rate >= 0.99, (fam, rate)


@pytest.mark.parametrize("distort", [_blur, _noise, _shift, _all])
def test_agreement_under_distortion(distort):
    rng = np.random.default_rng(0)
    scenes = _scenes(12, offset=7)
    rate = np.mean([_agrees(s, distort(render(s), rng)) for s in scenes])
    assert rate >= 0.99, rate


def _wrong(caption: str) -> str:
    """A caption the same scene cannot satisfy."""
    p = parse_prompt(caption)
    if p.relation:
        flip = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
        return Prompt(p.groups, flip[p.relation]).text()
    g = p.groups[0]
    if g.exact:
        return Prompt(
            (Group(g.shape, g.count % 4 + 1, True, g.colour, g.size),) + p.groups[1:]
        ).text()
    if g.colour:
        other = "red" if g.colour != "red" else "blue"
        return Prompt((Group(g.shape, g.count, g.exact, other, g.size),) + p.groups[1:]).text()
    if g.size:
        other = "small" if g.size == "large" else "large"
        return Prompt((Group(g.shape, g.count, g.exact, g.colour, other),) + p.groups[1:]).text()
    return Prompt((Group(g.shape, 4, True),)).text()


def test_rejects_false_captions():
    scenes = [s for s in _scenes(12, offset=3) if s.family != "composite"]
    verdicts = [check(render(s), _wrong(s.caption)) for s in scenes]
    assert np.mean([not v.ok for v in verdicts]) >= 0.99
    assert all(any(not ok for _, ok in v.requirements) for v in verdicts if not v.ok)


def test_tensor_and_array_inputs_match_pil():
    s = sample_scene(77, "color_attr")
    img = render(s)
    arr = np.array(img)
    t = torch.from_numpy(arr).permute(2, 0, 1).float() / 255
    ref = detect(img)
    assert detect(arr) == ref == detect(t)
    assert check(t, s.caption).ok


def test_blank_image_and_bad_input():
    blank = Image.new("RGB", (64, 64), (240, 240, 236))
    assert detect(blank) == []
    v = check(blank, "a red circle")
    assert not v.ok and v.requirements[0][1] is False
    with pytest.raises(ValueError, match="shape"):
        detect(np.zeros((64, 64)))
