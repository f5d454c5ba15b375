"""Selection sees the whole of a non-square image: a CLIP's preprocessing centre-crops to a square,
so without letterboxing the objects near the sides of a wide (or the top and bottom of a tall)
image are never seen and right and wrong images tie. ``score()`` keeps open_clip's centre crop."""

import pytest
import torch
from PIL import Image

from clipguide.model import load_clip
from clipguide.scoring import CLIPScorer
from clipguide.scoring.structure import letterbox
from clipguide.shapes import Scene, ShapeObject, render
from clipguide.shapes.scenes import BACKGROUND

LONG, SHORT = 112, 64  # 1.75:1, as SDXL's 1344x768; the centre crop keeps 64 of 112 pixels
EDGE = 26  # each object sits in the outer 26 pixels: outside the centre square


@pytest.fixture(scope="module")
def scorer():
    return CLIPScorer(load_clip("shapes", dtype=torch.float32), progress=False)


def _tile(shape: str, colour: str) -> Image.Image:
    """An EDGE x SHORT strip of background with one large shape in its middle."""
    obj = ShapeObject(shape, colour, "large", 32.0, 32.0, 20.0)
    full = render(Scene("", "position", (obj,), seed=1), jitter=False)
    half = EDGE // 2
    return full.crop((32 - half, 0, 32 + half, SHORT))


def _edges(first: tuple[str, str], second: tuple[str, str], tall: bool) -> Image.Image:
    """``first`` at the left (top) edge and ``second`` at the right (bottom) edge of a wide
    (tall) canvas of the scenes' background, nothing in between."""
    a, b = _tile(*first), _tile(*second)
    if tall:
        a, b = a.transpose(Image.Transpose.ROTATE_90), b.transpose(Image.Transpose.ROTATE_90)
    size = (SHORT, LONG) if tall else (LONG, SHORT)
    canvas = Image.new("RGB", size, BACKGROUND)
    canvas.paste(a, (0, 0))
    canvas.paste(b, (0, LONG - EDGE) if tall else (LONG - EDGE, 0))
    return canvas


@pytest.mark.parametrize(
    ("tall", "relation"), [(False, "left of"), (True, "above")], ids=["wide", "tall"]
)
def test_structured_sees_objects_near_the_edges(scorer, tall, relation):
    prompt = f"a red circle {relation} a blue square"
    right = _edges(("circle", "red"), ("square", "blue"), tall)
    reversed_ = _edges(("square", "blue"), ("circle", "red"), tall)
    swapped = _edges(("circle", "blue"), ("square", "red"), tall)
    # what the CLIP's preprocessing keeps of the three is the same empty background
    pre = scorer.clip.preprocess
    crops = [pre.from_pil([im]) for im in (right, reversed_, swapped)]
    assert torch.equal(crops[0], crops[1]) and torch.equal(crops[0], crops[2])
    scores = scorer.select([right, reversed_, swapped], prompt, "structured")
    assert scores[0] > scores[1] and scores[0] > scores[2], scores
    for method in ("parts", "views", "contrastive"):  # they see the sides too (no tie)
        scores = scorer.select([right, swapped], prompt, method)
        assert (scores[0] - scores[1]).abs() > 1e-3, (method, scores)


def test_plain_clipscore_keeps_the_centre_crop(scorer):
    """A deliberate choice: score() (and the "clipscore" method) is CLIPScore as open_clip and
    torchmetrics compute it, so a wide image scores like its centre square."""
    image = _edges(("circle", "red"), ("square", "blue"), tall=False)
    centre = image.crop(((LONG - SHORT) // 2, 0, (LONG + SHORT) // 2, SHORT))
    prompt = "a red circle left of a blue square"
    assert torch.allclose(scorer.score([image], prompt), scorer.score([centre], prompt))
    assert torch.equal(scorer.select([image], prompt, "clipscore"), scorer.score([image], prompt))


def test_letterbox_centres_the_image_on_its_fill():
    image = torch.rand(2, 3, 4, 8)
    fill = torch.tensor([0.1, 0.2, 0.3]).view(3, 1, 1)
    out = letterbox(image, fill)
    assert out.shape == (2, 3, 8, 8)
    assert torch.equal(out[..., 2:6, :], image)
    assert torch.equal(out[..., :2, :], fill.expand(2, 3, 2, 8))
    assert torch.equal(out[..., 6:, :], fill.expand(2, 3, 2, 8))
    tall = torch.rand(3, 9, 4)
    assert torch.equal(letterbox(tall, fill)[:, :, 2:6], tall)
    square = torch.rand(3, 5, 5)
    assert letterbox(square, fill) is square
