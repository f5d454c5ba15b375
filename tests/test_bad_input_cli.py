"""Bad input to every subcommand and option, run in-process through ``clipguide.cli.main``.

Each case asserts the exit status, that stderr is exactly one line ``clipguide CMD: ...`` (no
traceback) naming the option or argument and the value received, and, for arguments that can be
checked before the expensive work, that no model was loaded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import clipguide
import clipguide.cli.generate as cli_generate
import clipguide.model as model_layer
from clipguide.cli import CLIError, main
from clipguide.testing import save_openclip_dir, tiny_openclip_model

GEN = ["generate", "a red circle", "--steps", "2", "--no-progress", "--out", "{tmp}/out"]
SCORE = ["score", "{img}", "--prompt", "a red circle", "--out", "{tmp}/s.csv", "--no-progress"]
SCORE += ["--model", "local-dir:{model}"]
PROMPTS = ["score", "--out", "{tmp}/s.csv", "--model", "local-dir:{model}", "--no-progress"]
RERANK = ["rerank", "{img}", "--prompt", "a red circle", "--sheet", "{tmp}/sheet.png"]
RERANK += ["--model", "local-dir:{model}"]
TOO_BIG_SEED = str(2**64)
LAST_SEED = str(2**64 - 1)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return save_openclip_dir(tiny_openclip_model(seed=5), tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(1)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(root / f"{i}.png")
    return root


@pytest.fixture
def paths(tmp_path, model_dir, images) -> dict[str, str]:
    """Placeholders of the cases: a scratch folder, a plain file, spoilt inputs."""
    (tmp_path / "file.txt").write_text("not a folder")
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad.jsonl").write_text('{"path": "0.png", "prompt": "x"}\n{oops\n')
    (tmp_path / "columns.csv").write_text("file,caption\n0.png,x\n")
    (tmp_path / "binary.jsonl").write_bytes(b"\xff\xfe\x00\x81" * 10)
    (tmp_path / "blank.csv").write_text("path,prompt\n")
    (tmp_path / "taken.csv").write_text("path,prompt,cosine,clipscore,error\n")
    (tmp_path / "garbage.csv").write_text("name,value\nx,1\n")
    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    cut = tmp_path / "cut-model"
    cut.mkdir()
    for f in model_dir.iterdir():
        data = f.read_bytes()
        (cut / f.name).write_bytes(data[: int(len(data) * 0.999)] if f.suffix != ".json" else data)
    return {"{tmp}": str(tmp_path), "{model}": str(model_dir), "{img}": str(images)}


def _fill(argv: list[str], paths: dict[str, str]) -> list[str]:
    out = []
    for arg in argv:
        for key, value in paths.items():
            arg = arg.replace(key, value)
        out.append(arg)
    return out


def _no_models(monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the arguments were checked")

    monkeypatch.setattr(cli_generate, "load_pipeline", refuse)
    monkeypatch.setattr(model_layer, "load_clip", refuse)
    monkeypatch.setattr(clipguide, "load_clip", refuse)


def _no_cuda(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def _no_sampling(monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("sampling started before --score-with / --guide-clip loaded")

    monkeypatch.setattr(cli_generate, "sample", refuse)


def _offline(monkeypatch, tmp_path) -> None:
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))


# (id, argv, exit status, texts stderr must hold, checked before any model loads?)
CASES = [
    # -- generate: numbers ------------------------------------------------------------------
    ("gen-steps-0", GEN + ["--steps", "0"], 2, ["--steps", "'0'", "positive integer"], True),
    ("gen-steps-negative", GEN + ["--steps", "-3"], 2, ["--steps", "'-3'"], True),
    ("gen-steps-word", GEN + ["--steps", "two"], 2, ["--steps", "'two'"], True),
    ("gen-num-images-0", GEN + ["--num-images", "0"], 2, ["--num-images", "'0'"], True),
    ("gen-best-of-0", GEN + ["--best-of", "0"], 2, ["--best-of", "'0'"], True),
    ("gen-method-unknown", GEN + ["--method", "best"], 2, ["--method", "'best'", "structured"], True),
    ("gen-seed-negative", GEN + ["--seed", "-1"], 2, ["--seed", "'-1'", "0..2**64-1"], True),
    ("gen-seed-too-big", GEN + ["--seed", TOO_BIG_SEED], 2, ["--seed", TOO_BIG_SEED], True),
    ("gen-seed-word", GEN + ["--seed", "abc"], 2, ["--seed", "'abc'"], True),
    ("gen-seeds-run-past-the-last", GEN + ["--seed", LAST_SEED, "--num-images", "2"], 2,
     ["--seed " + LAST_SEED, "--num-images 2", "largest seed"], True),
    ("gen-cfg-nan", GEN + ["--cfg", "nan"], 2, ["--cfg", "'nan'", "finite"], True),
    ("gen-cfg-inf", GEN + ["--cfg", "inf"], 2, ["--cfg", "'inf'", "finite"], True),
    ("gen-cfg-negative", GEN + ["--cfg", "-1"], 2, ["--cfg", "'-1'", ">= 0"], True),
    ("gen-cfg-huge", GEN + ["--cfg", "1e9"], 2, ["--cfg", "'1e9'", "0..100"], True),
    ("gen-cfg-word", GEN + ["--cfg", "high"], 2, ["--cfg", "'high'"], True),
    ("gen-clip-guidance-inf", GEN + ["--clip-guidance", "inf"], 2,
     ["--clip-guidance", "'inf'", "finite"], True),
    ("gen-clip-guidance-nan", GEN + ["--clip-guidance", "NaN"], 2,
     ["--clip-guidance", "'NaN'"], True),
    ("gen-clip-guidance-negative", GEN + ["--clip-guidance", "-1"], 2,
     ["--clip-guidance", "'-1'"], True),
    ("gen-size-0", GEN + ["--size", "0"], 2, ["--size", "'0'", "multiple of 8"], True),
    ("gen-size-not-multiple-of-8", GEN + ["--size", "12"], 2, ["--size", "'12'"], True),
    ("gen-size-too-big", GEN + ["--size", "5000"], 2, ["--size", "'5000'", "4096"], True),
    ("gen-size-negative", GEN + ["--size", "-8"], 2, ["--size", "'-8'"], True),
    ("gen-size-fraction", GEN + ["--size", "64.5"], 2, ["--size", "'64.5'"], True),
    # -- generate: names, devices, models, files ---------------------------------------------
    ("gen-scheduler-unknown", GEN + ["--scheduler", "nope"], 2,
     ["--scheduler", "'nope'", "euler"], True),
    ("gen-guidance-mode-unknown", GEN + ["--clip-guidance-mode", "slow"], 2,
     ["--clip-guidance-mode", "'slow'", "fast"], True),
    ("gen-device-nonsense", GEN + ["--device", "nonsense"], 2,
     ["--device", "'nonsense'", "accepted here"], True),
    ("gen-device-meta", GEN + ["--device", "meta"], 2, ["--device", "'meta'"], True),
    ("gen-device-cuda-absent", GEN + ["--device", "cuda"], 2,
     ["--device", "'cuda'", "no cuda device"], (True, _no_cuda)),
    ("gen-model-missing-repo", GEN + ["--model", "nobody/x"], 2,
     ["--model 'nobody/x'", "local Hugging Face cache", "--model shapes"], (True, _offline)),
    ("gen-model-missing-folder", GEN + ["--model", "/nonexistent/folder"], 2,
     ["--model '/nonexistent/folder'", "accepted"], True),
    ("gen-model-folder-without-pipeline", GEN + ["--model", "{tmp}/empty"], 2,
     ["--model '{tmp}/empty'", "model_index.json"], True),
    ("gen-model-three-parts", GEN + ["--model", "a/b/c"], 2, ["--model 'a/b/c'"], True),
    ("gen-out-is-a-file", GEN + ["--out", "{tmp}/file.txt"], 2,
     ["--out '{tmp}/file.txt'", "is a file"], True),
    ("gen-out-under-a-file", GEN + ["--out", "{tmp}/file.txt/sub"], 2,
     ["--out '{tmp}/file.txt/sub'", "is a file"], True),
    ("gen-guide-decoder-missing", GEN + ["--guide-decoder", "{tmp}/nowhere"], 2,
     ["--guide-decoder '{tmp}/nowhere'", "not a folder"], True),
    ("gen-guide-decoder-tiny-elsewhere",
     GEN + ["--model", "{tmp}/empty", "--guide-decoder", "tiny"], 2,
     ["--guide-decoder 'tiny'", "micro world"], True),
    ("gen-unknown-option", GEN + ["--frobnicate"], 2, ["--frobnicate"], True),
    ("gen-no-prompt", ["generate"], 2, ["prompt", "required"], True),
    ("gen-score-with-unknown", GEN + ["--score-with", "no-such-clip"], 1,
     ["--score-with 'no-such-clip'", "Accepted"], (False, _no_sampling)),
    ("gen-guide-clip-unknown", GEN + ["--clip-guidance", "2", "--guide-clip", "no-such-clip"],
     1, ["--guide-clip no-such-clip", "Accepted"], (False, _no_sampling)),
    # -- score -------------------------------------------------------------------------------
    ("score-batch-size-0", SCORE + ["--batch-size", "0"], 2, ["--batch-size", "'0'"], True),
    ("score-batch-size-word", SCORE + ["--batch-size", "x"], 2, ["--batch-size", "'x'"], True),
    ("score-workers-0", SCORE + ["--workers", "0"], 2, ["--workers", "'0'"], True),
    ("score-checkpoint-nan", SCORE + ["--checkpoint-seconds", "nan"], 2,
     ["--checkpoint-seconds", "'nan'"], True),
    ("score-checkpoint-negative", SCORE + ["--checkpoint-seconds", "-1"], 2,
     ["--checkpoint-seconds", "'-1'"], True),
    ("score-format-unknown", SCORE + ["--format", "xml"], 2, ["--format", "'xml'", "csv"], True),
    ("score-dtype-unknown", SCORE + ["--dtype", "fp64"], 2, ["--dtype", "'fp64'", "bf16"], True),
    ("score-device-nonsense", SCORE + ["--device", "nonsense"], 2,
     ["--device", "'nonsense'"], True),
    ("score-out-unknown-suffix", SCORE + ["--out", "{tmp}/s.xyz"], 2,
     ["--out {tmp}/s.xyz", "'.xyz'", "--format"], True),
    ("score-out-is-a-folder", SCORE + ["--out", "{tmp}/empty"], 2,
     ["--out '{tmp}/empty'", "is a folder"], True),
    ("score-out-under-a-file", SCORE + ["--out", "{tmp}/file.txt/s.csv"], 2,
     ["--out '{tmp}/file.txt/s.csv'", "is a file"], True),
    ("score-out-exists", SCORE + ["--out", "{tmp}/taken.csv"], 2,
     ["--out {tmp}/taken.csv exists", "--resume", "--overwrite"], True),
    ("score-resume-and-overwrite", SCORE + ["--resume", "--overwrite"], 2,
     ["--resume", "--overwrite", "contradict"], True),
    ("score-resume-foreign-file", SCORE + ["--out", "{tmp}/garbage.csv", "--resume"], 2,
     ["--out {tmp}/garbage.csv cannot be resumed", "'path'"], True),
    ("score-prompts-missing", PROMPTS + ["--prompts", "{tmp}/missing.jsonl"], 2,
     ["--prompts {tmp}/missing.jsonl does not exist"], True),
    ("score-prompts-a-folder", PROMPTS + ["--prompts", "{tmp}/empty"], 2,
     ["--prompts {tmp}/empty is a folder"], True),
    ("score-prompts-bad-json", PROMPTS + ["--prompts", "{tmp}/bad.jsonl"], 2,
     ["--prompts {tmp}/bad.jsonl", "line 2 is not JSON"], True),
    ("score-prompts-wrong-columns", PROMPTS + ["--prompts", "{tmp}/columns.csv"], 2,
     ["--prompts {tmp}/columns.csv", "'path' and 'prompt'", "caption"], True),
    ("score-prompts-binary", PROMPTS + ["--prompts", "{tmp}/binary.jsonl"], 2,
     ["--prompts {tmp}/binary.jsonl", "not UTF-8"], True),
    ("score-prompts-no-records", PROMPTS + ["--prompts", "{tmp}/blank.csv"], 2,
     ["--prompts {tmp}/blank.csv", "no records"], True),
    ("score-prompt-and-prompts", SCORE + ["--prompts", "{tmp}/bad.jsonl"], 2,
     ["--prompts", "not allowed with", "--prompt"], True),
    ("score-neither-prompt", ["score", "{img}", "--out", "{tmp}/s.csv"], 2,
     ["--prompt", "--prompts", "required"], True),
    ("score-empty-folder", ["score", "{tmp}/empty", "--prompt", "x", "--out", "{tmp}/s.csv"], 2,
     ["no image files", "{tmp}/empty"], True),
    ("score-no-paths", ["score", "--prompt", "x", "--out", "{tmp}/s.csv"], 2,
     ["no images", "PATHS", "--prompts"], True),
    ("score-model-missing-repo", SCORE + ["--model", "nobody/x"], 1,
     ["--model 'nobody/x'", "local Hugging Face cache"], (False, _offline)),
    ("score-model-missing-folder", SCORE + ["--model", "local-dir:/nowhere"], 1,
     ["--model 'local-dir:/nowhere'", "does not exist"], False),
    ("score-model-unknown-name", SCORE + ["--model", "no-such-model"], 1,
     ["--model 'no-such-model'", "Accepted"], False),
    ("score-model-truncated-weights", SCORE + ["--model", "local-dir:{tmp}/cut-model"], 1,
     ["--model 'local-dir:{tmp}/cut-model'", "{tmp}/cut-model/open_clip_model.safetensors",
      "truncated"], False),
    ("score-pretrained-unknown-tag", SCORE + ["--model", "clipguide-tiny", "--pretrained", "x1"],
     1, ["--model 'clipguide-tiny'", "pretrained='x1'", "known tags"], False),
    ("score-default-judge-offline", SCORE[:-2], 1,
     ["default judge ViT-bigG-14/laion2b_s39b_b160k", "--model shapes"], (False, _offline)),
    # -- rerank ------------------------------------------------------------------------------
    ("rerank-dir-missing", ["rerank", "{tmp}/nowhere", *RERANK[2:]], 2,
     ["DIR '{tmp}/nowhere' is not a folder"], True),
    ("rerank-dir-a-file", ["rerank", "{tmp}/file.txt", *RERANK[2:]], 2,
     ["DIR '{tmp}/file.txt' is not a folder"], True),
    ("rerank-dir-empty", ["rerank", "{tmp}/empty", *RERANK[2:]], 2,
     ["DIR '{tmp}/empty' holds no image files"], True),
    ("rerank-sheet-unknown-format", RERANK + ["--sheet", "{tmp}/x.xyz"], 2,
     ["--sheet {tmp}/x.xyz", "'.xyz'", ".png"], True),
    ("rerank-sheet-no-suffix", RERANK + ["--sheet", "{tmp}/sheet"], 2,
     ["--sheet {tmp}/sheet", "without a suffix", ".png"], True),
    ("rerank-sheet-under-a-file", RERANK + ["--sheet", "{tmp}/file.txt/s.png"], 2,
     ["--sheet '{tmp}/file.txt/s.png'", "is a file"], True),
    ("rerank-sheet-is-a-folder", RERANK + ["--sheet", "{tmp}/empty.png"], 2,
     ["--sheet '{tmp}/empty.png'", "is a folder"], (True, "folder")),
    ("rerank-thumb-4", RERANK + ["--thumb", "4"], 2, ["--thumb", "'4'", "8 to 1024"], True),
    ("rerank-thumb-huge", RERANK + ["--thumb", "5000"], 2, ["--thumb", "'5000'"], True),
    ("rerank-top-0", RERANK + ["--top", "0"], 2, ["--top", "'0'"], True),
    ("rerank-workers-0", RERANK + ["--workers", "0"], 2, ["--workers", "'0'"], True),
    ("rerank-device-nonsense", RERANK + ["--device", "gpu0"], 2, ["--device", "'gpu0'"], True),
    ("rerank-no-prompt", ["rerank", "{img}"], 2, ["--prompt", "required"], True),
    ("rerank-model-missing-repo", RERANK + ["--model", "nobody/x"], 1,
     ["--model 'nobody/x'"], (False, _offline)),
    ("rerank-only-corrupt-images", ["rerank", "{tmp}/corrupt", *RERANK[2:]], 1,
     ["no readable images in DIR '{tmp}/corrupt'"], False),
    # -- the entry point ---------------------------------------------------------------------
    ("unknown-command", ["frobnicate"], 2, ["'frobnicate'", "generate", "score"], True),
    ("unknown-global-option", ["--bogus"], 2, ["--bogus"], True),
]  # fmt: skip


@pytest.mark.parametrize(
    ("argv", "status", "needles", "before_models"), [pytest.param(*c[1:], id=c[0]) for c in CASES]
)
def test_bad_cli_input_is_one_clear_line(
    argv, status, needles, before_models, paths, monkeypatch, capsys, tmp_path
) -> None:
    setup = None
    if isinstance(before_models, tuple):
        before_models, setup = before_models
    if setup == "folder":
        (tmp_path / "empty.png").mkdir()
    elif setup is _offline:
        _offline(monkeypatch, tmp_path)
    elif setup is not None:
        setup(monkeypatch)
    if before_models:
        _no_models(monkeypatch)
    capsys.readouterr()
    assert main(_fill(argv, paths)) == status
    err = capsys.readouterr().err
    assert "Traceback" not in err and "internal error" not in err, err
    assert err.count("\n") == 1 and err.startswith("clipguide"), err
    if argv[0] in ("generate", "score", "rerank"):
        assert err.startswith(f"clipguide {argv[0]}: "), err
    for needle in _fill(needles, paths):
        assert needle in err, err


def test_no_command_prints_help(capsys) -> None:
    """Documented: without a subcommand, the overview and exit status 2."""
    assert main([]) == 2
    assert "generate" in capsys.readouterr().out


def test_missing_image_among_paths_is_an_error_row(paths, capsys) -> None:
    """Documented fallback: a missing file is one row with its error, the others are scored."""
    out = Path(paths["{tmp}"]) / "rows.csv"
    missing = Path(paths["{tmp}"]) / "missing.png"
    argv = _fill(SCORE, paths) + ["--out", str(out)]
    argv[2:2] = [str(missing)]  # PATHS: the image folder, then the missing file
    assert main(argv) == 0
    text = out.read_text()
    assert f"{missing},a red circle,,,file not found" in text
    assert text.count("\n") == 1 + 3 + 1  # header, three images, the missing one


def _stop(*args, **kwargs):
    raise CLIError("stopped before loading", code=1)


def test_cfg_below_one_warns_that_cfg_is_off(paths, caplog, monkeypatch) -> None:
    """Documented fallback: --cfg in (0, 1) runs with classifier-free guidance off, warned."""
    monkeypatch.setattr(cli_generate, "_load", _stop)
    assert main(_fill(GEN, paths) + ["--cfg", "0.5"]) == 1
    assert "--cfg 0.5 is below 1" in caplog.text


def _boom(*args, **kwargs):
    return 1 / 0


def test_verbose_shows_the_traceback_of_an_unexpected_error(paths, monkeypatch, capsys) -> None:
    """Documented: an internal error is one line naming its type, or its traceback with -v."""
    monkeypatch.setattr(cli_generate, "check_args", _boom)
    assert main(_fill(GEN, paths)) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "internal error (ZeroDivisionError)" in err and "-v" in err
    with pytest.raises(ZeroDivisionError):
        main(["-v", *_fill(GEN, paths)])


def test_verbose_adds_the_cause_of_a_failed_load(paths, monkeypatch, capsys) -> None:
    """A model that fails to load is one line naming --model; -v adds the cause's traceback."""
    monkeypatch.setattr(cli_generate, "load_pipeline", _boom)
    assert main(_fill(GEN, paths)) == 1
    assert capsys.readouterr().err.startswith("clipguide generate: --model 'shapes': cannot load")
    assert main(["-v", *_fill(GEN, paths)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "ZeroDivisionError" in err
