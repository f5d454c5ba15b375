"""Selection methods of CLIPScorer: relations read from free-form prompts, the methods' API,
their fallback, bad input, and that the structured score sees bindings and relations on the
micro world where plain CLIPScore reads a bag of words."""

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from clipguide.model import load_clip
from clipguide.scoring import CLIPScorer
from clipguide.scoring.captions import Relation, relations
from clipguide.scoring.methods import METHODS, StructureWeights, structure_terms
from clipguide.scoring.metrics import rank
from clipguide.shapes import draw

DATA = Path(__file__).resolve().parent / "data"


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("a red circle left of a blue square", [("a red circle", "left of", "a blue square")]),
        (
            "two cats on a blue sofa next to a yellow lamp",
            [("two cats", "on", "a blue sofa"), ("a blue sofa", "next to", "a yellow lamp")],
        ),
        (
            "A (red fox:1.3) sitting under a big oak tree",
            [("A red fox", "under", "a big oak tree")],
        ),
        (
            "a small green triangle To The Right Of a large yellow circle",
            [("a small green triangle", "to the right of", "a large yellow circle")],
        ),
        (
            "a woman in a red dress to the left of a man in a black suit",
            [
                ("a woman", "in", "a red dress"),
                ("a woman", "to the left of", "a man"),
                ("a man", "in", "a black suit"),
            ],
        ),
        ("a cup of coffee next to an open laptop", [("a cup", "next to", "an open laptop")]),
        ("a cat on the left, a dog on the right", []),  # positions without a landmark
        ("a photo of a dog, soft light", []),
        ("", []),
        ("(((", []),
    ],
)
def test_relations_of_free_form_prompts(prompt, expected):
    assert relations(prompt) == [Relation(*e) for e in expected]


def test_relations_never_crash_on_the_held_prompt_lists():
    found = 0
    for name in ("freeform_prompts.json", "freeform_prompts_heldout.json"):
        for entry in json.loads((DATA / name).read_text()):
            rels = relations(entry["prompt"])
            found += bool(rels)
            for r in rels:  # every side is a span of the prompt's plain text
                assert r.subject and r.object and r.relation == r.relation.lower()
    assert found >= 30


@pytest.fixture(scope="module")
def scorer():
    return CLIPScorer(load_clip("shapes", dtype=torch.float32), progress=False)


LEFT = draw(("circle", "red", 16, 32), ("square", "blue", 48, 32))  # red circle on the left
RIGHT = draw(("circle", "red", 48, 32), ("square", "blue", 16, 32))
SWAPPED = draw(("circle", "blue", 16, 32), ("square", "red", 48, 32))  # colours swapped


def test_structured_sees_the_relation_and_the_binding(scorer):
    prompt = "a red circle left of a blue square"
    terms = structure_terms(scorer, [LEFT, RIGHT, SWAPPED], prompt)
    assert terms.relations[0] > 0.5 and terms.relations[1] < -0.5  # in order / reversed
    assert terms.parts[0] > terms.parts[2]  # "a red circle" is found only where it is drawn
    for wrong in (RIGHT, SWAPPED):
        assert scorer.rerank([wrong, LEFT], prompt, method="structured").indices[0] == 1
    # the scorer's own method is the default of rerank and select
    by_default = CLIPScorer(scorer.clip, method="structured", progress=False)
    assert torch.equal(by_default.select([LEFT, RIGHT], prompt), scorer.select(
        [LEFT, RIGHT], prompt, "structured"))  # fmt: skip


def test_every_method_scores_any_image_form_and_size(scorer):
    images = [LEFT, torch.rand(3, 40, 56), torch.rand(3, 600, 520)]  # 600 px: views downscaled
    for method in METHODS:
        out = scorer.select(images, "two red circles above a blue square", method)
        assert out.shape == (3,) and torch.isfinite(out).all(), method
        ranking = scorer.rerank(images, "two red circles above a blue square", method)
        assert ranking.indices == sorted(range(3), key=lambda i: -out[i].item()), method
        assert torch.equal(ranking.scores, out[ranking.indices]), method


def test_prompts_with_nothing_to_decompose_fall_back_to_the_plain_score(scorer):
    images = [LEFT, RIGHT, SWAPPED]
    plain = scorer.score(images, "a red circle")
    assert plain.min() > 0  # so CLIPScore's clamp does not apply
    for method in ("parts", "structured"):
        assert torch.allclose(scorer.select(images, "a red circle", method), plain, atol=1e-4)
    terms = structure_terms(scorer, images, "a red circle")
    assert terms.parts is terms.relations is terms.counts is None
    # a number word brings the count term; "a" alone does not
    assert structure_terms(scorer, images, "three red circles").counts is not None
    # plain CLIPScore stays what score() and the default method report
    assert torch.equal(scorer.select(images, "a red circle left of a blue square"),
                       scorer.score(images, "a red circle left of a blue square"))  # fmt: skip


def test_bad_methods_and_weights_name_argument_value_and_accepted(scorer):
    with pytest.raises(ValueError, match=r"method='best' is not a scoring method; accepted: "
                       r"clipscore, contrastive, parts, views, structured"):  # fmt: skip
        CLIPScorer(scorer.clip, method="best")
    with pytest.raises(ValueError, match=r"method=3 is not a scoring method; accepted: clip"):
        scorer.rerank([LEFT], "a red circle", method=3)
    with pytest.raises(ValueError, match=r"relations=-1 is not valid; accepted: a finite"):
        StructureWeights(relations=-1)
    with pytest.raises(ValueError, match=r"tau=0 is not valid; accepted: a finite number > 0"):
        StructureWeights(tau=0)
    with pytest.raises(TypeError, match=r"weights must be a StructureWeights or None, got"):
        CLIPScorer(scorer.clip, weights={"parts": 1})
    with pytest.raises(TypeError, match=r"prompt must be a str, got list"):
        scorer.select([LEFT], ["a red circle"], "structured")
    with pytest.raises(ValueError, match=r"images is empty"):
        scorer.select([], "a red circle", "views")


def test_best_of_n_ranks_by_the_method_asked(scorer):
    from clipguide.scoring import best_of_n
    from clipguide.shapes import pipeline

    pipe = pipeline(progress=False)
    prompt = "a red circle left of a blue square"
    kwargs = dict(seed=5, batch_size=3, progress=False, num_inference_steps=4, output_type="pt")
    plain = best_of_n(pipe, prompt, 3, scorer, **kwargs)
    chosen = best_of_n(pipe, prompt, 3, scorer, method="structured", **kwargs)
    images = [plain.images[plain.generation_order.index(i)] for i in range(3)]  # seed order
    expected = scorer.rerank(images, prompt, method="structured")
    assert chosen.generation_order == expected.indices
    assert torch.allclose(chosen.scores, expected.scores)
    assert torch.allclose(plain.scores, scorer.rerank(images, prompt).scores)

    calls = []

    def fake_pipe(*args, **kw):
        calls.append(kw)

    with pytest.raises(ValueError, match=r"method='clip' is not a scoring method; accepted"):
        best_of_n(fake_pipe, prompt, 2, scorer, method="clip", progress=False)
    assert calls == []  # refused before any image is made


def test_rerank_command_ranks_by_the_method(scorer, tmp_path, capsys):
    from clipguide.cli import main

    folder = tmp_path / "imgs"
    folder.mkdir()
    for name, image in (("a_right.png", RIGHT), ("b_swapped.png", SWAPPED), ("c_left.png", LEFT)):
        image.save(folder / name)
    prompt = "a red circle left of a blue square"
    argv = ["rerank", str(folder), "--prompt", prompt, "--model", "shapes"]
    argv += ["--sheet", str(tmp_path / "s.png")]
    assert main([*argv, "--method", "structured"]) == 0
    header, *lines = [line.split("\t") for line in capsys.readouterr().out.strip().splitlines()]
    assert header[1].startswith("structured (100 * selection score")
    paths = sorted(folder.glob("*.png"))
    expected = scorer.rerank(paths, prompt, method="structured")
    assert [Path(line[2]).name for line in lines] == [paths[i].name for i in expected.indices]
    assert lines[0][2].endswith("c_left.png")
    assert [float(line[1]) for line in lines] == pytest.approx(expected.scores.tolist(), abs=0.006)
    assert main([*argv, "--method", "best"]) == 2
    err = capsys.readouterr().err
    assert "--method" in err and "'best'" in err and "structured" in err


def test_generate_default_is_best_of_4_by_structure_with_a_sheet_and_a_summary(
    scorer, tmp_path, capsys
):
    from clipguide.cli import main
    from clipguide.shapes import check

    prompt = "a red circle left of a blue square"
    common = ["generate", prompt, "--steps", "6", "--no-progress", "--seed", "7"]
    assert main([*common, "--out", str(tmp_path / "best")]) == 0
    line = capsys.readouterr().out.strip()
    [png] = sorted((tmp_path / "best").glob("*.png"))  # only the chosen image is a PNG
    meta = json.loads(png.with_suffix(".json").read_text())
    picks = meta["best_of"]
    assert picks["n"] == 4 and picks["method"] == "structured" and picks["judge"] == "shapes"
    assert sorted(picks["candidate_seeds"]) == [7, 8, 9, 10] and meta["seed"] == picks[
        "candidate_seeds"][0]  # fmt: skip
    sheet = tmp_path / "best" / picks["sheet"]
    with Image.open(sheet) as image:
        assert image.format == "JPEG" and image.size[0] > 4 * 192  # four candidates in a row
    verdict = "correct" if meta["oracle"]["ok"] else "wrong"
    assert line.startswith(f"{png} | best of 4 by structured (scores, chosen first: ")
    assert f"oracle: {verdict}" in line and line.endswith(f"sheet: {sheet}")
    assert f"shapes {meta['scores']['shapes']:.2f}" in line and len(line.splitlines()) == 1
    # each candidate regenerated alone (its recorded layout given as --region boxes with its
    # weight, blend and placement, or plain with --layout none): the structured ranking agrees
    layout_of = dict(zip(picks["candidate_seeds"], picks["candidate_layouts"], strict=True))
    plain = []
    for seed in (7, 8, 9, 10):
        argv = ["generate", prompt, "--steps", "6", "--no-progress", "--seed", str(seed)]
        laid = layout_of[seed]
        if laid is None:
            argv += ["--layout", "none"]
        for r in laid["regions"] if laid else ():
            box = ",".join(map(str, r["box"])) + f"@{laid['weight']}"
            argv += ["--region", f"{box}:{r['prompt']}"]
        if laid:
            argv += ["--region-blend", str(laid["blend"]), "--region-place", str(laid["place"])]
        assert main([*argv, "--best-of", "1", "--out", str(tmp_path / "one")]) == 0
        plain.append(Image.open(tmp_path / "one" / f"{png.stem.rsplit('-', 1)[0]}-{seed}.png"))
    capsys.readouterr()
    # the layouts the candidates were drawn on, which the structured score's layout term reads
    drawn = {
        tuple((r["prompt"], tuple(r["box"])) for r in laid["regions"]): None
        for laid in picks["candidate_layouts"]
        if laid
    }
    assert drawn and picks["layout_weight"] == StructureWeights().layouts  # laid out by default
    ranking = rank(scorer.select(plain, prompt, "structured", layouts=list(drawn)))
    assert [7 + i for i in ranking.indices] == picks["candidate_seeds"]
    assert ranking.scores.tolist() == pytest.approx(picks["candidate_scores"], abs=0.5)
    assert check(plain[ranking.indices[0]], prompt).ok == meta["oracle"]["ok"]


def test_selection_benchmark_smoke_run(tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import selection

    argv = ["--split", "dev", "--limit", "7", "--n", "2", "--cache", str(tmp_path)]  # 1 a family
    out = selection.main([*argv, "--methods", "clipscore", "structured", "--cost-items", "1"])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == json.loads(
        json.dumps(out)
    )
    rows = out["methods"]
    assert set(rows) == {"clipscore", "structured"} and out["settings_tried"] == 2
    assert rows["clipscore"]["vs_clipscore"][0] == 0.0
    for row in rows.values():
        assert 0 <= row["accuracy"] <= 1 and row["items"] == out["items"] == 7
        assert set(row["family"]) == {"single_object", "two_object", "counting", "colors",
                                      "position", "color_attr", "size"}  # fmt: skip
        assert all(f["items"] == 1 for f in row["family"].values())
    assert out["cost"]["generation_s_per_image"] > 0
    assert out["cost"]["structured"]["s_per_image"] > 0
    with pytest.raises(SystemExit):
        selection.main(["--split", "test", "--tune"])  # nothing is tuned on the test split
    assert "--tune works on the dev split only" in capsys.readouterr().err
