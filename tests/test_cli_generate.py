"""``clipguide generate`` with CLIP guidance and best-of-N on the micro world."""

import json

import numpy as np
import pytest
from PIL import Image

from clipguide.cli import main as cli_main

# one plain sample per image unless a test asks for more (the default is best-of-4)
BASE = ["generate", "a red circle left of a blue square", "--steps", "6", "--no-progress"]
BASE += ["--best-of", "1"]


def _pixels(path):
    return np.asarray(Image.open(path), dtype=np.int16)


def test_best_of_n_keeps_the_best_candidate_and_its_seed_regenerates_it(tmp_path):
    argv = BASE + ["--out", str(tmp_path / "best"), "--best-of", "3", "--num-images", "2"]
    argv += ["--clip-guidance", "2", "--score-with", "shapes", "--method", "clipscore"]
    assert cli_main(argv) == 0  # candidates ranked by CLIPScore: the sidecar's score is the best
    sidecars = sorted((tmp_path / "best").glob("*.json"))
    assert len(sidecars) == 2
    for i, sidecar in enumerate(sidecars):
        meta = json.loads(sidecar.read_text())
        picks = meta["best_of"]
        assert picks["n"] == 3 and picks["judge"] == "shapes" and picks["method"] == "clipscore"
        assert sorted(picks["candidate_seeds"]) == [3 * i + j for j in range(3)]
        assert picks["candidate_scores"] == sorted(picks["candidate_scores"], reverse=True)
        assert meta["seed"] == picks["candidate_seeds"][0]
        assert meta["scores"]["shapes"] == pytest.approx(picks["candidate_scores"][0], abs=0.05)
        assert meta["clip_guidance"] == {"scale": 2.0, "mode": "fast", "decoder": "tiny"}
    # the recorded seed regenerates the chosen image on its own
    meta = json.loads(sidecars[0].read_text())
    again = BASE + ["--out", str(tmp_path / "again"), "--seed", str(meta["seed"])]
    assert cli_main(again + ["--clip-guidance", "2", "--score-with", "shapes"]) == 0
    chosen = (tmp_path / "best") / meta["file"]
    redo = next((tmp_path / "again").glob("*.png"))
    assert np.abs(_pixels(chosen) - _pixels(redo)).max() <= 2


def test_guidance_changes_the_image_and_bad_values_are_refused(tmp_path, capsys):
    assert cli_main(BASE + ["--out", str(tmp_path / "plain"), "--score-with", "shapes"]) == 0
    assert cli_main(BASE + ["--out", str(tmp_path / "guided"), "--clip-guidance", "4"]) == 0
    plain = next((tmp_path / "plain").glob("*.png"))
    guided = next((tmp_path / "guided").glob("*.png"))
    assert np.abs(_pixels(plain) - _pixels(guided)).max() > 0
    assert (
        cli_main(
            BASE
            + ["--out", str(tmp_path / "vae"), "--clip-guidance", "4", "--guide-decoder", "vae"]
        )
        == 0
    )
    through_vae = next((tmp_path / "vae").glob("*.png"))
    assert np.abs(_pixels(through_vae) - _pixels(guided)).max() > 0
    assert (
        json.loads(through_vae.with_suffix(".json").read_text())["clip_guidance"]["decoder"]
        == "vae"
    )
    for bad in (
        ["--best-of", "0"],
        ["--clip-guidance", "-1"],
        ["--guide-decoder", str(tmp_path / "no-such-folder")],
        ["--model", str(tmp_path), "--guide-decoder", "tiny"],
    ):
        capsys.readouterr()
        assert cli_main(BASE + ["--out", str(tmp_path / "x")] + bad) == 2
        err = capsys.readouterr().err
        assert bad[-2] in err and "Traceback" not in err and len(err.splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_a_model_registered_by_name_brings_its_own_defaults(tmp_path, monkeypatch):
    """--model NAME looks NAME up in the command line's models (as the micro world registers
    "shapes"): its loader, steps, cfg and sidecar fields are used, with no case for it."""
    from clipguide.cli import models
    from clipguide.testing import tiny_sdxl_pipeline

    calls = []

    def load(device, scheduler, progress):
        calls.append((str(device), scheduler, progress))
        return tiny_sdxl_pipeline(seed=2)

    def annotate(images, prompt):
        return [{"note": f"{prompt} #{i}"} for i in range(len(images))]

    model = models.NamedModel(
        load=load, description="a test model", steps=3, cfg=1.5, annotate=annotate
    )
    monkeypatch.setitem(models._models, "tiny-test", model)
    argv = ["generate", "a red circle", "--model", "tiny-test", "--num-images", "2"]
    argv += ["--scheduler", "ddim", "--no-progress", "--device", "cpu", "--out", str(tmp_path)]
    assert cli_main(argv) == 0
    metas = [json.loads(p.read_text()) for p in sorted(tmp_path.glob("*.json"))]
    assert calls == [("cpu", "ddim", False)]
    assert [m["note"] for m in metas] == ["a red circle #0", "a red circle #1"]
    assert {(m["steps"], m["cfg_scale"], m["model"]) for m in metas} == {(3, 1.5, "tiny-test")}
    assert all(m["scores"] == {} and "oracle" not in m for m in metas)


def test_a_pipeline_folder_gets_the_named_scheduler_from_its_own_config(tmp_path):
    from diffusers import DDIMScheduler

    from clipguide.cli.generate import load_pipeline
    from clipguide.cli.schedulers import SCHEDULERS, scheduler_from_config
    from clipguide.testing import tiny_sdxl_pipeline

    tiny_sdxl_pipeline(seed=4).save_pretrained(tmp_path / "pipe")
    pipe = load_pipeline(str(tmp_path / "pipe"), "ddim", "cpu", False)
    assert isinstance(pipe.scheduler, DDIMScheduler)
    assert pipe.scheduler.config.beta_end == 0.012  # the model's noise schedule is kept
    assert len(SCHEDULERS) == 15  # 9 samplers, 6 of them also with Karras sigmas
    with pytest.raises(ValueError, match=r"scheduler='nope' is not one of \('euler'"):
        scheduler_from_config("nope", pipe.scheduler.config)
