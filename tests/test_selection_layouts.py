"""The ``structured`` score's layout term: when candidates were drawn on layouts (best-of-N
across layouts), each box must show its own phrase. The pure maths against hand-computed
cases, then on micro-world scenes, the API and bad input."""

import pytest
import torch

from clipguide.conditioning import Layout, Region
from clipguide.model import load_clip
from clipguide.scoring import CLIPScorer
from clipguide.scoring.methods import StructureWeights, layout_boxes, structure_terms
from clipguide.scoring.structure import fraction_box, layout_agreement
from clipguide.shapes import draw


def test_fraction_box_rounds_to_pixels_and_refuses_bad_boxes():
    assert fraction_box((0, 0, 0.5, 1), 64, 64) == (0, 0, 64, 32)
    assert fraction_box((0.5, 0.25, 1, 0.75), 40, 60) == (10, 30, 20, 30)
    assert fraction_box((0.99, 0.99, 1, 1), 8, 8) == (7, 7, 1, 1)  # at least one pixel
    for bad in ((0.5, 0, 0.5, 1), (0, 0, 1.2, 1), (-0.1, 0, 1, 1)):
        with pytest.raises(
            ValueError, match=r"box=.* is not valid; accepted: 4 numbers \(x0, y0, x1"
        ):
            fraction_box(bad, 8, 8)


def test_layout_agreement_is_the_least_box_margin_against_other_phrases_or_the_empty_view():
    # two images, two boxes, two phrases; box 0 should show phrase 1, box 1 phrase 0
    region = torch.tensor(
        [[[0.2, 0.5], [0.6, 0.1]],  # margins: 0.5 - 0.2 = 0.3, 0.6 - 0.1 = 0.5
         [[0.4, 0.3], [0.2, 0.2]]]  # margins: -0.1, 0.0
    )  # fmt: skip
    blank = torch.zeros(2, 2)
    assert layout_agreement(region, blank, [1, 0]).tolist() == pytest.approx([0.3, -0.1])
    # one phrase (a count): each box against the empty view
    single = torch.tensor([[[0.5], [0.4]], [[0.5], [0.1]]])
    empty = torch.tensor([[0.1], [0.2]])
    assert layout_agreement(single, empty, [0, 0]).tolist() == pytest.approx([0.3, -0.1])
    with pytest.raises(ValueError, match=r"columns must give each of the 2 boxes a phrase"):
        layout_agreement(region, blank, [0, 2])
    with pytest.raises(ValueError, match=r"blank_sims must be \(2, 2\)"):
        layout_agreement(region, torch.zeros(2, 3), [0, 1])
    with pytest.raises(ValueError, match=r"region_sims must be \(N, R, K\)"):
        layout_agreement(region[0], blank, [0, 1])


@pytest.fixture(scope="module")
def scorer():
    return CLIPScorer(load_clip("shapes", dtype=torch.float32), progress=False)


# a column this time (test_selection has the row): the red circle on top, or at the bottom
TOP = draw(("circle", "red", 32, 16), ("square", "blue", 32, 48))
BOTTOM = draw(("circle", "red", 32, 48), ("square", "blue", 32, 16))
SWAPPED = draw(("circle", "blue", 32, 16), ("square", "red", 32, 48))  # colours swapped
PROMPT = "a red circle above a blue square"
COLUMN = [("a red circle", (0, 0, 1, 0.5)), ("a blue square", (0, 0.5, 1, 1))]
REVERSED = [("a blue square", (0, 0, 1, 0.5)), ("a red circle", (0, 0.5, 1, 1))]


def test_the_layout_term_sees_which_box_shows_which_phrase(scorer):
    images = [TOP, BOTTOM, SWAPPED]
    column = structure_terms(scorer, images, PROMPT, layouts=[COLUMN]).layouts
    assert column[0] > 0.5 > -0.5 > column[1]  # in its boxes / each in the other's box
    assert column[0] > column[2]  # the colours bound to the wrong shapes
    both = structure_terms(scorer, images, PROMPT, layouts=[COLUMN, REVERSED]).layouts
    rev = structure_terms(scorer, images, PROMPT, layouts=[REVERSED]).layouts
    assert torch.allclose(both, torch.maximum(column, rev))  # the best of the layouts
    assert both[1] > 0.5 and both[2] < both[0]
    # without layouts, or at weight 0, there is no term
    assert structure_terms(scorer, images, PROMPT).layouts is None
    off = StructureWeights(layouts=0)
    assert structure_terms(scorer, images, PROMPT, off, layouts=[COLUMN]).layouts is None


def test_a_count_layout_finds_the_empty_box(scorer):
    two = draw(("square", "red", 16, 32), ("square", "blue", 48, 32))
    one = draw(("square", "red", 16, 32))
    halves = [("a square", (0, 0, 0.5, 1)), ("a square", (0.5, 0, 1, 1))]
    term = structure_terms(scorer, [two, one], "two squares", layouts=[halves]).layouts
    assert term[0] > 0.3 and abs(term[1]) < 1e-4  # the empty box is the empty view


def test_select_adds_the_weighted_term_and_reads_layouts_in_any_form(scorer):
    images = [TOP, BOTTOM, SWAPPED]
    plain = scorer.select(images, PROMPT, "structured")
    layouts = [
        Layout("column", "relation", tuple(Region(p, box=b) for p, b in COLUMN)),
        Layout("reversed", "relation", tuple(Region(p, box=b) for p, b in REVERSED)),
    ]
    picked = scorer.select(images, PROMPT, "structured", layouts=layouts)
    term = structure_terms(scorer, images, PROMPT, layouts=[COLUMN, REVERSED]).layouts
    weight = StructureWeights().layouts
    assert torch.allclose(picked - plain, scorer.scale * weight * term, atol=1e-4)
    # a masked region is read by its mask's bounding box; weight syntax by its plain text
    mask = torch.zeros(8, 8)
    mask[:4] = 1  # the top half
    masked = [Layout("column", "relation", (Region("a (red:1.3) circle", mask=mask),
                                         Region(COLUMN[1][0], box=COLUMN[1][1])))]  # fmt: skip
    assert layout_boxes(masked) == [COLUMN]
    # a prompt with nothing else to check still gets the term
    alone = scorer.select(images, "a red circle", "structured", layouts=[[COLUMN[0]]])
    assert not torch.allclose(alone, scorer.select(images, "a red circle", "structured"))


@pytest.mark.parametrize(
    ("layouts", "error", "message"),
    [
        ("auto", TypeError, r"layouts must be a list of Layout or of \[\(phrase"),
        ([[("a circle", (0, 0, 1.5, 1))]], ValueError, r"layouts\[0\]=.* is not a layout: box="),
        ([[("  ", (0, 0, 1, 1))]], ValueError, r"layouts\[0\]=.* phrase '  ' is not a non-emp"),
        ([COLUMN, [("a circle",)]], ValueError, r"layouts\[1\]=.* is not a layout"),
        ([[]], ValueError, r"layouts\[0\] has no boxes; accepted: at least one box"),
    ],
)
def test_bad_layouts_are_refused_by_name(scorer, layouts, error, message):
    with pytest.raises(error, match=message):
        scorer.select([TOP], PROMPT, "structured", layouts=layouts)


def test_layouts_are_read_only_by_structured(scorer):
    with pytest.raises(ValueError, match=r"layouts are read only by method='structured', got "
                       r"method='clipscore' with 1 layout\(s\)"):  # fmt: skip
        scorer.select([TOP], PROMPT, "clipscore", layouts=[COLUMN])
    with pytest.raises(ValueError, match=r"layouts=-1 is not valid; accepted: a finite number"):
        StructureWeights(layouts=-1)
