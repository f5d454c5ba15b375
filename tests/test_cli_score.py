"""``clipguide score`` / ``rerank`` on a folder of generated PNGs with a corrupt file."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipguide.cli import build_parser, main
from clipguide.cli.score_files import read_prompt_file, read_rows
from clipguide.model import load_clip
from clipguide.scoring import CLIPScorer
from clipguide.testing import save_openclip_dir, tiny_openclip_model

PROMPT = "two red circles above a blue square"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_openclip_dir(tiny_openclip_model(seed=4), tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 small PNGs of varied sizes and modes, a corrupt PNG and a non-image file."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    (root / "sub").mkdir()
    for i in range(24):
        h, w = int(rng.integers(20, 60)), int(rng.integers(20, 60))
        image = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        if i % 5 == 0:
            image = image.convert("RGBA")
        image.save((root / "sub" if i % 4 == 0 else root) / f"img{i:03d}.png")
    (root / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(40)))
    (root / "notes.txt").write_text("not an image, not picked up")
    return root


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.png"))


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_score_folder_to_csv_matches_the_scorer(
    folder: Path, model_dir: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "scores.csv"
    argv = [
        "score",
        str(folder),
        "--prompt",
        PROMPT,
        "--out",
        str(out),
        "--model",
        f"local-dir:{model_dir}",
    ]
    assert main([*argv, "--batch-size", "5", "--no-progress"]) == 0
    rows = _read_csv(out)
    assert [r["path"] for r in rows] == [str(p) for p in _images(folder)]  # one row each, in order
    assert list(rows[0]) == ["path", "prompt", "cosine", "clipscore", "error"]
    bad = [r for r in rows if r["error"]]
    assert [Path(r["path"]).name for r in bad] == ["corrupt.png"] and bad[0]["cosine"] == ""
    good = [r for r in rows if not r["error"]]
    scorer = CLIPScorer(load_clip(f"local-dir:{model_dir}"))
    cos = scorer.cosine([Path(r["path"]) for r in good], PROMPT)
    assert np.allclose([float(r["cosine"]) for r in good], cos.numpy(), atol=2e-6)
    assert np.allclose(
        [float(r["clipscore"]) for r in good], 100 * cos.clamp_min(0).numpy(), atol=2e-4
    )
    assert not (tmp_path / "scores.csv.journal.jsonl").exists()
    # no temp files left behind; the settings a --resume checks beside the rows
    assert sorted(os.listdir(tmp_path)) == ["scores.csv", "scores.csv.job.json"]
    capsys.readouterr()
    assert main(argv) == 2
    assert f"--out {out} exists; pass --resume" in capsys.readouterr().err


def test_prompts_file_jsonl_output_and_missing_prompt(
    folder: Path, model_dir: Path, tmp_path: Path
) -> None:
    images = _images(folder)
    mapping = tmp_path / "captions.csv"
    with mapping.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "prompt"])
        for i, p in enumerate(images[:-1]):  # the last image has no prompt
            writer.writerow([os.path.relpath(p, tmp_path), f"prompt {i % 3}"])
    assert read_prompt_file(mapping)[0] == (os.path.abspath(images[0]), "prompt 0")
    out = tmp_path / "scores.jsonl"
    argv = ["score", *map(str, images), "--prompts", str(mapping), "--out", str(out)]
    assert (
        main([*argv, "--model", f"local-dir:{model_dir}", "--robust", "--hessel", "--no-progress"])
        == 0
    )
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == len(images)
    assert rows[1]["prompt"] == "prompt 1" and rows[1]["error"] == ""
    assert 0 <= rows[1]["clipscore"] <= 2.5 and "clipscore_grayscale" in rows[1]
    assert rows[-1]["error"].startswith("no prompt for this image") and rows[-1]["cosine"] is None


def test_bad_prompt_files_are_clear_errors(tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("file,caption\na.png,x\n")
    with pytest.raises(
        ValueError, match=r"record 1 needs 'path' and 'prompt' fields, got \['caption', 'file'\]"
    ):
        read_prompt_file(wrong)
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"path": "a.png", "prompt": "x"}\n{oops\n')
    with pytest.raises(ValueError, match="line 2 is not JSON"):
        read_prompt_file(broken)


def test_resume_skips_done_images_without_duplicates(
    folder: Path, model_dir: Path, tmp_path: Path
) -> None:
    images = _images(folder)
    out = tmp_path / "s.csv"
    common = [
        "--prompt",
        PROMPT,
        "--out",
        str(out),
        "--model",
        f"local-dir:{model_dir}",
        "--no-progress",
    ]
    main(["score", *map(str, images[:10]), *common])
    first = _read_csv(out)
    main(["score", str(folder), *common, "--resume"])
    rows = _read_csv(out)
    assert sorted(r["path"] for r in rows) == sorted(map(str, images))
    assert rows[:10] == first  # earlier rows kept as they were


KILLABLE = """
import sys, time
import clipguide.scoring as scoring
original = scoring.CLIPScorer.cosine
calls = []
def stalled(self, *args, **kwargs):  # 4 batches go through, the 5th waits to be killed:
    calls.append(1)                  # mid-way whatever the machine's load
    if len(calls) > 4:
        time.sleep(3600)
    return original(self, *args, **kwargs)
scoring.CLIPScorer.cosine = stalled
from clipguide.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_kill_and_resume_loses_and_duplicates_nothing(
    folder: Path, model_dir: Path, tmp_path: Path
) -> None:
    images = _images(folder)
    out = tmp_path / "killed.jsonl"
    argv = [
        "score",
        str(folder),
        "--prompt",
        PROMPT,
        "--out",
        str(out),
        "--model",
        f"local-dir:{model_dir}",
    ]
    argv += ["--batch-size", "2", "--checkpoint-seconds", "0.6", "--no-progress"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLABLE, *argv], env=env, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 600  # a hang guard: start-up takes minutes under load
    while len(read_rows(out, "jsonl")) < 8:
        assert proc.poll() is None, proc.stderr.read().decode()  # still running
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    before = read_rows(out, "jsonl")
    assert 8 <= len(before) < len(images)
    main([*argv, "--resume"])
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    paths = [r["path"] for r in rows]
    assert len(paths) == len(set(paths)) == len(images)
    assert sorted(paths) == sorted(map(str, images))
    by_path = {r["path"]: r for r in rows}
    assert all(by_path[r["path"]] == r for r in before)  # scored before the kill: kept as is
    assert not Path(f"{out}.journal.jsonl").exists()


def test_rerank_writes_a_ranked_contact_sheet(
    folder: Path, model_dir: Path, tmp_path: Path, capsys
) -> None:
    sheet = tmp_path / "sheet.png"
    argv = [
        "rerank",
        str(folder),
        "--prompt",
        PROMPT,
        "--top",
        "5",
        "--sheet",
        str(sheet),
        "--thumb",
        "40",
    ]
    assert main([*argv, "--model", f"local-dir:{model_dir}"]) == 0
    header, *lines = capsys.readouterr().out.strip().splitlines()
    assert header == "rank\tclipscore (CLIPScore = 100 * max(cos, 0))\tpath"
    assert [line.split("\t")[0] for line in lines] == ["1", "2", "3", "4", "5"]
    scores = [float(line.split("\t")[1]) for line in lines]
    assert scores == sorted(scores, reverse=True)
    scorer = CLIPScorer(load_clip(f"local-dir:{model_dir}"))
    good = [p for p in _images(folder) if p.name != "corrupt.png"]
    expected = scorer.rerank(good, PROMPT)
    assert [line.split("\t")[2] for line in lines] == [str(good[i]) for i in expected.indices[:5]]
    with Image.open(sheet) as image:
        assert image.size[0] > 3 * 40 and image.size[1] > 2 * 40  # 3 columns, 2 rows
        first = np.asarray(image.convert("RGB"))[6:46, 6:46]
    assert first.std() > 0  # a thumbnail, not blank paper


def test_help_shows_examples() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name in ("score", "rerank"):
        text = sub.choices[name].format_help()
        assert f"clipguide {name} " in text and "example" in text and "--model shapes" in text


def test_default_judge_is_bigg_like_load_clip(folder: Path, tmp_path: Path, monkeypatch) -> None:
    import clipguide.model as model_layer
    import clipguide.model.sources as loading
    from clipguide.cli import score as cli_score

    assert (cli_score.DEFAULT_MODEL, cli_score.DEFAULT_PRETRAINED) == (
        loading.DEFAULT_MODEL,
        loading.DEFAULT_PRETRAINED,
    )
    calls = []

    def fake_load_clip(source, **kwargs):
        calls.append((source, kwargs))
        raise RuntimeError("stop here")

    monkeypatch.setattr(model_layer, "load_clip", fake_load_clip)
    score = ["score", str(folder), "--prompt", PROMPT, "--out", str(tmp_path / "o.csv")]
    rerank = ["rerank", str(folder), "--prompt", PROMPT, "--sheet", str(tmp_path / "s.png")]
    assert main(score) == 1 and main(rerank) == 1  # "stop here", after the default was chosen
    # load_clip's own default: ViT-bigG-14 with laion2b_s39b_b160k (no pretrained override)
    assert [(source, "pretrained" in kwargs) for source, kwargs in calls] == [
        ("ViT-bigG-14", False),
        ("ViT-bigG-14", False),
    ]


def test_default_judge_missing_offline_is_one_clear_line(
    folder: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    out = tmp_path / "o.csv"
    argv = ["score", str(folder), "--prompt", PROMPT, "--out", str(out), "--no-progress"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith("clipguide score: ")
    assert "ViT-bigG-14" in err and "--model shapes" in err and "local-dir:" in err
    assert not out.exists()


def test_duplicate_paths_scored_once_and_failed_load_leaves_nothing(
    folder: Path, model_dir: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "dups.csv"
    image = _images(folder)[0]
    same = [str(image), str(image.parent / "." / image.name), str(image)]
    argv = ["score", *same, "--prompt", PROMPT, "--out", str(out), "--model", "local-dir:/nowhere"]
    assert main(argv) == 1
    assert "--model 'local-dir:/nowhere'" in capsys.readouterr().err
    assert not out.exists() and not Path(f"{out}.journal.jsonl").exists()
    main(
        ["score", *same, "--prompt", PROMPT, "--out", str(out), "--model", f"local-dir:{model_dir}"]
    )
    assert [r["path"] for r in _read_csv(out)] == [str(image)]
