"""``clipguide generate --region`` / ``--layout`` on the micro world: boxes reach the sampler
and the sidecar, candidates spread over layouts are recorded and drawn, bad input is refused
with one clear error before sampling."""

import json

import numpy as np
import pytest
from PIL import Image

from clipguide.cli import main as cli_main

BASE = ["generate", "a blue triangle and a cyan square", "--steps", "4", "--no-progress"]
BASE += ["--score-with", "shapes"]


def _pixels(path):
    return np.asarray(Image.open(path), dtype=np.int16)


def test_explicit_regions_condition_the_image_and_are_recorded(tmp_path):
    plain = BASE + ["--best-of", "1", "--layout", "none", "--out", str(tmp_path / "plain")]
    assert cli_main(plain) == 0
    boxed = BASE + ["--best-of", "1", "--out", str(tmp_path / "boxed")]
    boxed += ["--region", "0,0,0.5,1:a cyan square", "--region", "right:a blue triangle"]
    assert cli_main(boxed) == 0
    a = next((tmp_path / "plain").glob("*.png"))
    b = next((tmp_path / "boxed").glob("*.png"))
    assert np.abs(_pixels(a) - _pixels(b)).max() > 0
    meta = json.loads(b.with_suffix(".json").read_text())
    assert meta["regions"]["regions"] == [
        {"prompt": "a cyan square", "box": [0.0, 0.0, 0.5, 1.0], "weight": 1.0},
        {"prompt": "a blue triangle", "box": [0.5, 0.0, 1.0, 1.0], "weight": 1.0},
    ]
    assert meta["regions"]["blend"] == 0.3
    assert meta["regions"]["place"] == 0.0
    assert "regions" not in json.loads(a.with_suffix(".json").read_text())
    placed = BASE + ["--best-of", "1", "--out", str(tmp_path / "placed")]
    placed += ["--region", "0,0,0.5,1:a cyan square", "--region", "right:a blue triangle"]
    assert cli_main(placed + ["--region-place", "0.9"]) == 0
    c = next((tmp_path / "placed").glob("*.png"))
    assert np.abs(_pixels(b) - _pixels(c)).max() > 0
    assert json.loads(c.with_suffix(".json").read_text())["regions"]["place"] == 0.9


def test_best_of_across_layouts_records_and_draws_each_candidates_layout(tmp_path):
    argv = BASE + ["--best-of", "4", "--layout", "auto", "--out", str(tmp_path)]
    assert cli_main(argv) == 0
    sidecar = next(tmp_path.glob("*.json"))
    picks = json.loads(sidecar.read_text())["best_of"]
    layouts = picks["candidate_layouts"]  # ranked like the candidates: 3 laid out, 1 plain
    assert len(layouts) == 4 and sum(lay is None for lay in layouts) == 1
    laid = [lay for lay in layouts if lay is not None]
    assert {lay["name"] for lay in laid} == {"row", "row reversed"}
    assert all(lay["kind"] == "colour_binding" and lay["place"] == 0.9 for lay in laid)
    assert (tmp_path / picks["sheet"]).is_file()


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--region", "0,0,1.5,1:a fox"], "argument --region: '0,0,1.5,1:a fox'"),
        (["--region", "0,0,0.5,1:"], "argument --region: '0,0,0.5,1:'"),
        (["--region", "0.5,0,0.5,1:a fox"], "argument --region"),
        (["--region", "a fox"], "argument --region: 'a fox'"),
        (["--region", "left:a fox", "--layout", "auto"], "--layout auto cannot be combined"),
        (["--region", "left:a fox", "--region-blend", "2"], "--region-blend 2.0 is not valid"),
        (["--region", "left:a fox", "--region-place", "-1"], "--region-place -1.0 is not valid"),
    ],
)
def test_bad_regions_are_refused_before_sampling(tmp_path, capsys, extra, needle):
    out = tmp_path / "never"
    code = cli_main(BASE + ["--out", str(out), *extra])
    assert code == 2
    err = capsys.readouterr().err
    assert needle in err
    assert len(err.strip().splitlines()) == 1  # one clear line
    assert not out.exists() or not any(out.iterdir())  # nothing was sampled


def test_the_micro_world_lays_out_relations_by_default_and_not_single_objects(tmp_path):
    argv = ["generate", "a circle left of a square", "--steps", "3", "--no-progress"]
    argv += ["--best-of", "1", "--score-with", "shapes", "--out", str(tmp_path / "rel")]
    assert cli_main(argv) == 0
    meta = json.loads(next((tmp_path / "rel").glob("*.json")).read_text())
    assert meta["layout"]["name"] == "left of"
    assert [r["prompt"] for r in meta["layout"]["regions"]] == ["a circle", "a square"]
    single = ["generate", "a red circle", "--steps", "3", "--no-progress", "--best-of", "1"]
    assert cli_main(single + ["--score-with", "shapes", "--out", str(tmp_path / "one")]) == 0
    assert "layout" not in json.loads(next((tmp_path / "one").glob("*.json")).read_text())
