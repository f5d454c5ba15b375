"""``clipguide rerank`` says what its numbers are, writes a sheet only when asked, and can be quiet."""

from __future__ import annotations

from pathlib import Path

import pytest

from clipguide.cli import main
from clipguide.shapes import render, sample_scene

PROMPT = "a red circle"


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("images")
    for seed in range(3):
        render(sample_scene(seed)).save(root / f"scene{seed}.png")
    return root


def _rerank(folder: Path, *extra: str) -> list[str]:
    return ["rerank", str(folder), "--prompt", PROMPT, "--model", "shapes", *extra]


def test_rerank_writes_no_sheet_unless_asked(folder, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(_rerank(folder, "--no-progress")) == 0
    out, err = capsys.readouterr()
    assert list(tmp_path.iterdir()) == []  # no ./sheet.png, nothing else either
    assert len(out.strip().splitlines()) == 1 + 3  # header + one row per image
    assert err == ""


def test_rerank_header_names_the_method_and_the_scale(folder, capsys):
    assert main(_rerank(folder, "--no-progress")) == 0
    header = capsys.readouterr().out.splitlines()[0]
    assert header == "rank\tclipscore (CLIPScore = 100 * max(cos, 0))\tpath"
    assert main(_rerank(folder, "--no-progress", "--hessel")) == 0
    assert "2.5 * max(cos, 0)" in capsys.readouterr().out.splitlines()[0]
    assert main(_rerank(folder, "--no-progress", "--method", "views")) == 0
    header = capsys.readouterr().out.splitlines()[0].split("\t")
    assert header[0] == "rank" and header[2] == "path"
    assert header[1].startswith("views (100 * selection score") and "not a CLIPScore" in header[1]


def test_rerank_sheet_is_written_and_named_in_one_line(folder, tmp_path, capsys):
    sheet = tmp_path / "best.jpg"
    assert main(_rerank(folder, "--no-progress", "--top", "2", "--sheet", str(sheet))) == 0
    out, err = capsys.readouterr()
    assert sheet.is_file()
    assert err.splitlines() == [f"contact sheet of the 2 best: {sheet}"]
    assert len(out.strip().splitlines()) == 1 + 2


def test_rerank_progress_bar_is_switchable(folder, capsys):
    assert main(_rerank(folder)) == 0
    assert "3/3" in capsys.readouterr().err  # tqdm's bar, on stderr
    assert main(_rerank(folder, "--no-progress")) == 0
    assert capsys.readouterr().err == ""
