"""``clipguide score`` jobs as users run them: a resume checks the judge it continues, one image
with several captions gives a row per caption, a file name that is not UTF-8 is scored, JSON
arrays and Excel's CSV are read, and a finished run says what it wrote in one line."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipguide.cli import build_parser, main
from clipguide.cli.score_files import read_prompt_file
from clipguide.distributed.sources import read_manifest
from clipguide.model import load_clip
from clipguide.scoring import CLIPScorer
from clipguide.testing import save_openclip_dir, tiny_openclip_model

CAPTIONS = ("a red circle", "two blue squares", "a green triangle", "an empty canvas", "a dot")
# b"caf\xe9.png": Latin-1 bytes, not UTF-8; Python names it with a surrogate (PEP 383)
ODD_NAME = os.fsdecode(b"caf\xe9.png")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_openclip_dir(tiny_openclip_model(seed=4), tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="module")
def scorer(model_dir: Path) -> CLIPScorer:
    return CLIPScorer(load_clip(f"local-dir:{model_dir}"), progress=False)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(5)
    for i in range(4):
        array = rng.integers(0, 256, (24 + i, 30, 3), dtype=np.uint8)
        Image.fromarray(array).save(root / f"im{i}.png")
    return root


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _score(*argv: str) -> int:
    return main(["score", *argv, "--no-progress"])


# -- item 4: a resume continues the same judge, or is refused naming the option --------------
def test_resume_with_another_judge_is_refused_naming_the_option(
    folder: Path, model_dir: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "s.csv"
    judge = ["--model", f"local-dir:{model_dir}"]
    assert _score(str(folder / "im0.png"), "--prompt", "x", "--out", str(out), *judge) == 0
    before = out.read_bytes()
    capsys.readouterr()
    changes = {
        "--hessel": ["--hessel"],
        "--dtype": ["--dtype", "bf16"],
        "--model": ["--model", "shapes"],
        "--pretrained": ["--pretrained", "other.safetensors"],
        "--robust": ["--robust"],
    }
    for option, extra in changes.items():
        argv = [str(folder), "--prompt", "x", "--out", str(out), "--resume"]
        argv += (judge if option != "--model" else []) + extra
        assert _score(*argv) == 2, option
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and f"--out {out}" in err, err
        assert option in err.split(";")[0], err  # the differing option is named first
        assert out.read_bytes() == before  # nothing appended
    assert "--model " + repr(f"local-dir:{model_dir}") in _last_refusal(
        folder, out, ["--model", "shapes"], capsys
    )
    # the same judge resumes: the other images are scored, nothing refused
    argv = [str(folder), "--prompt", "x", "--out", str(out), "--resume", *judge]
    assert _score(*argv) == 0
    assert len(_read_csv(out)) == 4


def _last_refusal(folder: Path, out: Path, extra: list[str], capsys) -> str:
    assert _score(str(folder), "--prompt", "x", "--out", str(out), "--resume", *extra) == 2
    return capsys.readouterr().err


def test_resume_of_the_default_judge_equals_naming_it(tmp_path: Path) -> None:
    """``--model``/``--pretrained`` left out and given as the defaults are one judge."""
    from clipguide.cli.score_settings import judge_settings
    from clipguide.model.openclip import DEFAULT_MODEL, DEFAULT_PRETRAINED

    assert judge_settings(None, None, None, 100.0) == judge_settings(
        DEFAULT_MODEL, DEFAULT_PRETRAINED, None, 100.0
    )
    assert judge_settings("shapes", None, None, 100.0) != judge_settings(None, None, None, 100.0)


# -- item 5: rows are (image, prompt) -------------------------------------------------------
def test_one_image_with_several_captions_gives_a_row_per_caption(
    folder: Path, model_dir: Path, scorer: CLIPScorer, tmp_path: Path
) -> None:
    manifest = tmp_path / "captions.jsonl"
    records = [{"path": str(folder / "im0.png"), "prompt": c} for c in CAPTIONS]
    records += [{"path": str(folder / "im1.png"), "prompt": CAPTIONS[0]}]
    records += [records[0]]  # the same (image, caption) twice: one row
    manifest.write_text("".join(json.dumps(r) + "\n" for r in records))
    out = tmp_path / "s.jsonl"
    argv = ["--prompts", str(manifest), "--out", str(out), "--model", f"local-dir:{model_dir}"]
    assert _score(*argv) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(Path(r["path"]).name, r["prompt"]) for r in rows] == [
        ("im0.png", c) for c in CAPTIONS
    ] + [("im1.png", CAPTIONS[0])]
    expected = scorer.cosine(
        [folder / "im0.png"] * 5 + [folder / "im1.png"], [*CAPTIONS, CAPTIONS[0]]
    )
    assert np.allclose([r["cosine"] for r in rows], expected.numpy(), atol=2e-6)
    assert len({r["cosine"] for r in rows[:5]}) == 5  # five captions, five scores
    assert _score(*argv, "--resume") == 0  # nothing left: the same rows, none added
    assert [json.loads(line) for line in out.read_text().splitlines()] == rows
    # PATHS with --prompts: each named image gets every caption the file has for it
    out2 = tmp_path / "named.csv"
    argv2 = [str(folder / "im0.png"), str(folder / "im2.png"), "--prompts", str(manifest)]
    assert _score(*argv2, "--out", str(out2), "--model", f"local-dir:{model_dir}") == 0
    named = _read_csv(out2)
    assert [(Path(r["path"]).name, r["prompt"]) for r in named] == [
        ("im0.png", c) for c in CAPTIONS
    ] + [("im2.png", "")]
    assert named[-1]["error"].startswith("no prompt for this image")


# -- item 6: a file name that is not UTF-8 -------------------------------------------------
@pytest.fixture
def odd_folder(folder: Path, tmp_path: Path) -> Path:
    root = tmp_path / "odd"
    root.mkdir()
    try:
        (root / ODD_NAME).write_bytes((folder / "im0.png").read_bytes())
    except (UnicodeEncodeError, OSError):
        pytest.fail("this filesystem refuses non-UTF-8 names; the test needs Linux")
    (root / "plain.png").write_bytes((folder / "im1.png").read_bytes())
    return root


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_a_file_name_that_is_not_utf8_is_scored(
    odd_folder: Path, model_dir: Path, scorer: CLIPScorer, tmp_path: Path, suffix: str
) -> None:
    out = tmp_path / f"s{suffix}"
    argv = [
        str(odd_folder),
        "--prompt",
        "x",
        "--out",
        str(out),
        "--model",
        f"local-dir:{model_dir}",
    ]
    assert _score(*argv) == 0
    if suffix == ".csv":
        rows = _read_csv(out)
    else:
        rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    from clipguide.cli.score_files import display_path

    shown = str(odd_folder / "caf\\xe9.png")  # the byte that is not UTF-8 as \xNN
    assert [r["path"] for r in rows] == [shown, str(odd_folder / "plain.png")]
    assert display_path(odd_folder / ODD_NAME) == shown
    expected = scorer.cosine([odd_folder / ODD_NAME], "x")
    assert not rows[0]["error"] and abs(float(rows[0]["cosine"]) - float(expected[0])) <= 2e-6
    assert _score(*argv, "--resume") == 0  # read back and matched: nothing scored twice
    assert len(out.read_text(encoding="utf-8").splitlines()) == len(rows) + (suffix == ".csv")


# -- item 7: manifests as people write them ---------------------------------------------------
def test_json_array_and_excel_csv_manifests_are_read(folder: Path, tmp_path: Path) -> None:
    records = [{"path": "im0.png", "prompt": "a, b"}, {"path": "im1.png", "prompt": "c"}]
    expected = [(str(folder / "im0.png"), "a, b"), (str(folder / "im1.png"), "c")]
    array = folder / "array.json"
    array.write_text(json.dumps(records, indent=2))
    excel = folder / "excel.csv"  # Excel's "CSV UTF-8": a byte-order mark, CRLF lines
    excel.write_bytes(b'\xef\xbb\xbfpath,prompt\r\nim0.png,"a, b"\r\nim1.png,c\r\n')
    for file in (array, excel):
        assert read_prompt_file(file) == expected, file
        assert read_manifest(file) == expected, file
    (folder / "object.json").write_text(json.dumps({"path": "im0.png", "prompt": "x"}))
    assert read_manifest(folder / "object.json") == [(str(folder / "im0.png"), "x")]
    (folder / "nested.json").write_text(json.dumps([[1, 2]]))
    with pytest.raises(ValueError, match=r"record 1 needs 'path' and 'prompt' fields, got list"):
        read_prompt_file(folder / "nested.json")


def test_a_manifest_without_prompts_is_refused_by_both_engines(folder: Path, tmp_path) -> None:
    file = folder / "paths_only.jsonl"
    file.write_text('{"path": "im0.png"}\n{"path": "im1.png"}\n')
    for read in (read_manifest, read_prompt_file):  # the Ray engine read it, then failed rows
        with pytest.raises(ValueError, match=r"no 'prompt' field in any record.*got \['path'\]"):
            read(file)


# -- issue 20 item 8: a finished run says what it wrote; the help's examples are whole -------
def test_score_prints_one_summary_line(
    folder: Path, model_dir: Path, tmp_path: Path, capsys
) -> None:
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    out = tmp_path / "s.csv"
    argv = [str(folder), str(tmp_path / "broken.png"), "--prompt", "x", "--out", str(out)]
    assert _score(*argv, "--model", f"local-dir:{model_dir}") == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines() == [f"{out}: 5 rows, 1 error (5 scored now)"]
    assert captured.err == ""
    assert _score(*argv, "--model", f"local-dir:{model_dir}", "--resume") == 0
    assert capsys.readouterr().out.splitlines() == [
        f"{out}: 5 rows, 1 error (0 scored now, 5 kept from before)"
    ]


def test_score_help_examples_are_whole_lines() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    text = sub.choices["score"].format_help()
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.rstrip().endswith("\\"):  # a shell continuation: the next line goes on
            assert lines[i + 1].startswith("      --"), lines[i : i + 2]
    assert not any("auto  " in line for line in lines)  # was: two lines run together
    ray_example = next(i for i, line in enumerate(lines) if "--engine ray --address" in line)
    assert lines[ray_example].endswith("\\") and "--concurrency 8" in lines[ray_example + 1]
