"""The pure maths of structure-aware selection, against hand-computed cases."""

import math

import pytest
import torch

from clipguide.scoring.structure import (
    WINDOWS,
    box_centres,
    count_agreement,
    part_presence,
    relation_agreement,
    relation_axis,
    window_boxes,
    window_views,
)


def test_window_boxes_on_an_8_pixel_image():
    boxes = window_boxes(8, 8)
    # 3x3 windows of side 4 at 0, 2, 4; then 2x2 of side 5 at 0, 3
    grid = [(t, left, 4, 4) for t in (0, 2, 4) for left in (0, 2, 4)]
    assert boxes == grid + [(t, left, 5, 5) for t in (0, 3) for left in (0, 3)]
    assert len(window_boxes(64, 48)) == len(boxes) == 13  # the count depends on the layout only
    for top, left, h, w in window_boxes(37, 53):
        assert 0 <= top and top + h <= 37 and 0 <= left and left + w <= 53
    assert window_boxes(10, 10, [(1.0, 1.0)]) == [(0, 0, 10, 10)]
    with pytest.raises(ValueError, match=r"layout entries must be \(side, stride\)"):
        window_boxes(8, 8, [(1.5, 0.5)])
    assert WINDOWS == ((0.5, 0.25), (0.625, 0.375))


def test_window_views_keep_the_box_and_fill_the_rest_with_the_border_median():
    image = torch.rand(3, 6, 6)
    # border: 20 pixels per channel; make the median of channel 0 exactly 0.25
    border = torch.zeros(6, 6, dtype=torch.bool)
    border[0], border[-1], border[:, 0], border[:, -1] = True, True, True, True
    image[0][border] = torch.tensor([0.1] * 9 + [0.25] * 2 + [0.9] * 9)
    views = window_views(image, [(1, 2, 3, 2), (0, 0, 6, 6)])
    assert views.shape == (2, 3, 6, 6)
    assert torch.equal(views[0, :, 1:4, 2:4], image[:, 1:4, 2:4])
    outside = torch.ones(6, 6, dtype=torch.bool)
    outside[1:4, 2:4] = False
    assert torch.all(views[0, 0][outside] == 0.25)
    assert torch.equal(views[1], image)  # a window over everything is the image itself


def test_box_centres_and_part_presence():
    centres = box_centres([(0, 0, 4, 4), (4, 2, 4, 6)], 8, 8)
    assert centres.tolist() == [[0.25, 0.25], [0.625, 0.75]]
    sims = torch.tensor([[[0.1, 0.5], [0.3, 0.2]], [[0.9, 0.05], [0.0, 0.0]]])
    # best window per phrase: [0.3, 0.5] and [0.9, 0.05]; the least found phrase wins
    assert part_presence(sims).tolist() == pytest.approx([0.3, 0.05])


@pytest.mark.parametrize(
    ("relation", "axis"),
    [
        ("left of", (0, -1.0)),
        ("to the right of", (0, 1.0)),
        ("on the far left of", (0, -1.0)),
        ("above", (1, -1.0)),
        ("on top of", (1, -1.0)),
        ("Under", (1, 1.0)),
        ("beneath", (1, 1.0)),
        ("next to", None),
        ("behind", None),
        ("on", None),
    ],
)
def test_relation_axis(relation, axis):
    assert relation_axis(relation) == axis


def test_relation_agreement_reads_where_each_phrase_is_found():
    centres = torch.tensor([[0.25, 0.5], [0.75, 0.5], [0.5, 0.2]])
    subject = torch.tensor([[0.9, 0.1, 0.1]])  # found in window 0 (x = 0.25)
    obj = torch.tensor([[0.1, 0.9, 0.1]])  # found in window 1 (x = 0.75)
    # tau tiny: each phrase sits at its best window's centre; offset -0.5 along x
    left = relation_agreement(subject, obj, centres, "left of", tau=1e-4)
    assert left.item() == pytest.approx(math.tanh(0.5 / 0.125))
    right = relation_agreement(subject, obj, centres, "right of", tau=1e-4, scale=0.25)
    assert right.item() == pytest.approx(-math.tanh(0.5 / 0.25))
    assert relation_agreement(subject, obj, centres, "above", tau=1e-4).item() == pytest.approx(0)
    assert relation_agreement(subject, obj, centres, "next to").tolist() == [0.0]
    # a large tau spreads each phrase over all windows: both at the mean centre
    spread = relation_agreement(subject, obj, centres, "left of", tau=1e6)
    assert spread.item() == pytest.approx(0.0, abs=1e-4)


def test_count_agreement_is_the_prompts_log_probability():
    image = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    prompt = torch.tensor([1.0, 0.0])
    variants = torch.tensor([[0.0, 1.0], [0.0, 1.0]])
    out = count_agreement(image, prompt, variants, logit_scale=3.0)
    # image 0: logits (3, 0, 0); image 1: logits (0, 3, 3)
    assert out[0].item() == pytest.approx(3 - math.log(math.exp(3) + 2))
    assert out[1].item() == pytest.approx(-math.log(1 + 2 * math.exp(3)))
