"""The oracle agrees with the generator's labels, also under blur, noise, colour shift and drift."""

import json

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter

from clipguide.shapes import TRAIN_FAMILIES, Group, Prompt, parse_caption, render, sample_scene
from clipguide.shapes.oracle import check, detect

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
    p = parse_caption(caption)
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
    assert detect(torch.from_numpy(arr).permute(2, 0, 1)) == ref  # uint8 tensor: 0..255
    assert check(t, s.caption).ok


def test_blank_image_and_bad_input():
    blank = Image.new("RGB", (64, 64), (240, 240, 236))
    assert detect(blank) == []
    v = check(blank, "a red circle")
    assert not v.ok and v.requirements[0][1] is False
    with pytest.raises(ValueError, match="shape"):
        detect(np.zeros((64, 64)))


# ---------------------------------------------------------------- colour drift, flecks, blobs
# The pipeline's samples drift in colour inside one shape and leave faint blobs; the oracle
# read such a shape as several objects (a "two circles" image as six).


def _drifted(shape: str, start: str, end: str) -> tuple[np.ndarray, object]:
    """One large shape whose colour turns from ``start`` (left edge) to ``end`` (right edge)."""
    from clipguide.shapes import COLOURS, Scene, ShapeObject

    obj = ShapeObject(shape, start, "large", 32.0, 32.0, 22.0)
    scene = Scene(f"a {start} {shape}", "colors", (obj,), (240, 240, 236), 5)
    arr = np.asarray(render(scene, jitter=False)).astype(float)
    bg = np.array(scene.background, dtype=float)
    a, b = np.array(COLOURS[start], dtype=float), np.array(COLOURS[end], dtype=float)
    cover = np.clip(np.linalg.norm(arr - bg, axis=-1) / np.linalg.norm(a - bg), 0, 1)
    t = np.clip((np.arange(64) - (obj.cx - obj.extent / 2)) / obj.extent, 0, 1)[None, :, None]
    colour = (1 - t) * a + t * b
    out = bg + cover[..., None] * (colour - bg)
    return np.clip(out, 0, 255).round().astype(np.uint8), obj


@pytest.mark.parametrize("shape", ["circle", "square", "triangle"])
@pytest.mark.parametrize(
    "start, end",
    [
        ("blue", "purple"),
        ("cyan", "blue"),
        ("green", "cyan"),
        ("yellow", "green"),
        ("red", "yellow"),
        ("purple", "red"),
        ("red", "green"),
    ],
)
def test_a_shape_whose_colour_drifts_is_one_object(shape, start, end):
    image, obj = _drifted(shape, start, end)
    found = detect(image)
    assert len(found) == 1, found
    assert (found[0].shape, found[0].size) == (shape, "large")
    assert abs(found[0].cx - obj.cx) <= 1.5 and abs(found[0].cy - obj.cy) <= 1.5
    assert check(image, f"one {shape}").ok and not check(image, f"two {shape}s").ok


def _one_circle() -> np.ndarray:
    from clipguide.shapes.scenes import Scene, ShapeObject

    obj = ShapeObject("circle", "red", "large", 20.0, 20.0, 20.0)
    return np.asarray(render(Scene("a red circle", "colors", (obj,), (240, 240, 236), 3))).copy()


def test_faint_blob_and_sliver_are_not_objects():
    from clipguide.shapes import COLOURS

    image = _one_circle().astype(float)
    yy, xx = np.mgrid[:64, :64]
    bump = 0.6 * np.exp(-((xx - 46) ** 2 + (yy - 46) ** 2) / (2 * 5.0**2))  # a faint green blob
    image += bump[..., None] * (np.array(COLOURS["green"]) - image)
    image[8:10, 40:60] = COLOURS["blue"]  # a two-pixel sliver along the top
    image = np.clip(image, 0, 255).round().astype(np.uint8)
    found = detect(image)
    assert [(d.shape, d.colour) for d in found] == [("circle", "red")]
    assert check(image, "one circle").ok


# ---------------------------------------------------------------- against a second reading


@pytest.fixture
def agreement(monkeypatch):
    """benchmarks/oracle_agreement.py, imported as a module."""
    import sys
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parent.parent / "benchmarks"))
    import oracle_agreement

    yield oracle_agreement
    sys.modules.pop("oracle_agreement", None)


def test_error_rate_on_drifting_vae_round_trips_per_family(agreement):
    """Scenes through the shipped VAE with a smooth latent drift (colours drift within a shape,
    faint blobs appear): at most 4 wrong verdicts of 60 per family (true and contrastive
    captions of 30 scenes), at most 2.5% overall. The old oracle, which read each colour
    patch as its own object, made 10% in the worst family and 4.2% overall here."""
    scenes = agreement.scenes_for(30, seed=6)  # held out: the thresholds were tuned on seed 0
    images = agreement.vae_round_trip([render(s) for s in scenes], drift=0.5, seed=6)
    result = agreement.measure(scenes, images)
    worst = max((r["error"], fam) for fam, r in result.items())
    assert worst[0] <= 0.07, (worst, result)
    assert result["all"]["error"] <= 0.025, result["all"]


def test_agreement_benchmark_prints_its_figures(agreement, capsys):
    summary = agreement.main(["--per-family", "1", "--threads", "1"])
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last == summary
    assert set(last["vae"]) == {*TRAIN_FAMILIES, "all"}
    assert last["clean"]["all"] == {
        "n": 8,
        "reject": 0.0,
        "accept": 0.0,
        "error": 0.0,
        "scene": 0.0,
    }
    assert {"reject", "accept", "error", "scene"} <= set(last["vae_drift"]["all"])


@pytest.mark.parametrize(
    "a, b",
    [
        (("square", "red", "large", 20, 32, 20), ("square", "yellow", "large", 40, 32, 20)),
        (("square", "red", "large", 20, 32, 20), ("circle", "yellow", "small", 35.5, 32, 11)),
        (("square", "blue", "large", 20, 32, 20), ("circle", "purple", "large", 40.5, 32, 20)),
        (("circle", "green", "large", 22, 22, 20), ("circle", "cyan", "large", 40, 40, 20)),
        (("triangle", "red", "large", 22, 32, 20), ("square", "purple", "small", 37.5, 36, 11)),
    ],
)
def test_touching_shapes_of_neighbouring_hues_stay_two(a, b):
    """Merging a drifting shape's patches must not merge two shapes that touch."""
    from clipguide.shapes.scenes import Scene, ShapeObject

    objects = (ShapeObject(*a), ShapeObject(*b))
    found = detect(render(Scene("", "two_object", objects, (240, 240, 236), 1)))
    assert sorted((d.shape, d.colour, d.size) for d in found) == sorted(o[:3] for o in (a, b))
