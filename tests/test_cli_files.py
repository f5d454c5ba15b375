"""Output files of ``generate`` and ``score``: permissions, one atomic writer, kills, strict JSON."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import clipguide.cli.files as files
import clipguide.cli.generate as cli_generate
from clipguide.cli import main
from clipguide.scoring import CLIPScorer
from clipguide.testing import save_openclip_dir, tiny_openclip_model

PROMPT = "a red circle"
GEN = ["generate", PROMPT, "--steps", "2", "--size", "32", "--no-progress", "--best-of", "1"]
GEN += ["--score-with", "shapes"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return save_openclip_dir(tiny_openclip_model(seed=2), tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(3)
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(root / f"{i}.png")
    return root


def _strict_json(text: str):
    def refuse(constant: str):
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


def _temps(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob(".*.tmp"))


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_outputs_follow_the_umask(images, model_dir, tmp_path) -> None:
    """mkstemp's 0600 used to survive the rename; a new file must get 0666 less the umask."""
    old = os.umask(0o027)
    try:
        assert main([*GEN, "--out", str(tmp_path / "gen")]) == 0
        out = tmp_path / "s.jsonl"
        argv = ["score", str(images), "--prompt", PROMPT, "--out", str(out)]
        assert main([*argv, "--model", f"local-dir:{model_dir}", "--no-progress"]) == 0
    finally:
        os.umask(old)
    made = [*sorted((tmp_path / "gen").iterdir()), out]
    assert [_generic(p.name) for p in made] == [
        "a-red-circle-H-0.json",
        "a-red-circle-H-0.png",
        "s.jsonl",
    ]
    assert [oct(_mode(p)) for p in made] == [oct(0o640)] * 3


def test_every_output_goes_through_one_atomic_writer(
    images, model_dir, tmp_path, monkeypatch
) -> None:
    targets = []
    real = files._temp_path

    def spy(path):
        targets.append(Path(path).name)
        return real(path)

    monkeypatch.setattr(files, "_temp_path", spy)
    assert main([*GEN, "--out", str(tmp_path / "gen")]) == 0
    out = tmp_path / "new" / "sub" / "s.jsonl"  # folders made first, the journal's too
    argv = ["score", str(images), "--prompt", PROMPT, "--out", str(out)]
    assert main([*argv, "--model", f"local-dir:{model_dir}", "--no-progress"]) == 0
    sheet = tmp_path / "sheet.webp"
    argv = ["rerank", str(images), "--prompt", PROMPT, "--sheet", str(sheet), "--thumb", "16"]
    assert main([*argv, "--model", f"local-dir:{model_dir}"]) == 0
    # sidecar first, then its PNG; the score file (rewritten whole); the contact sheet
    assert [_generic(t) for t in targets[:2]] == ["a-red-circle-H-0.json", "a-red-circle-H-0.png"]
    assert targets[-1] == "sheet.webp" and set(targets[2:-1]) == {"s.jsonl"}
    assert len(_strict_json(out.read_text().splitlines()[0])) == 5
    with Image.open(sheet) as image:
        assert image.format == "WEBP"
    assert _temps(tmp_path) == []


def _generic(name: str) -> str:
    """A generated file's name with its settings hash as ``H``."""
    return re.sub(r"-[0-9a-f]{8}-(\d+)\.", r"-H-\1.", name)


KILL_AT_RENAME = """
import os, signal, sys
renames = 0
real = os.replace
def replace(src, dst):
    global renames
    renames += 1
    if renames == int(os.environ["KILL_AT_RENAME"]):
        os.kill(os.getpid(), signal.SIGKILL)  # between writing the temp file and its rename
    return real(src, dst)
os.replace = replace
from clipguide.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _killed(argv: list[str], rename: int) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "KILL_AT_RENAME": str(rename)}
    proc = subprocess.run(
        [sys.executable, "-c", KILL_AT_RENAME, *argv],
        env=env,
        capture_output=True,
        timeout=600,
    )
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]


def test_generate_killed_between_sidecar_and_png_never_leaves_a_png_alone(tmp_path) -> None:
    out = tmp_path / "gen"
    argv = [*GEN, "--out", str(out)]
    _killed(argv, rename=2)  # the second file of the pair is being renamed into place
    pngs = sorted(out.glob("*.png"))
    assert all(p.with_suffix(".json").is_file() for p in pngs)  # no PNG without its sidecar
    assert pngs == [] and len(_temps(out)) == 1
    [json_file] = out.glob("*.json")
    sidecar = _strict_json(json_file.read_text())
    assert sidecar["file"] == json_file.with_suffix(".png").name and sidecar["seed"] == 0
    assert main(argv) == 0  # the rerun completes the pair and sweeps the killed run's temp file
    assert sorted(p.name for p in out.iterdir()) == [json_file.name, sidecar["file"]]
    assert _temps(out) == []
    with Image.open(out / sidecar["file"]) as image:
        assert image.size == (32, 32)


def test_score_resume_removes_the_temp_file_of_a_killed_checkpoint(
    images, model_dir, tmp_path
) -> None:
    out = tmp_path / "s.csv"
    argv = ["score", str(images), "--prompt", PROMPT, "--out", str(out), "--no-progress"]
    argv += ["--model", f"local-dir:{model_dir}", "--batch-size", "2", "--checkpoint-seconds", "0"]
    _killed(argv, rename=2)  # the first checkpoint went through; killed in the second
    assert len(_temps(tmp_path)) == 1
    assert main([*argv, "--resume"]) == 0
    assert _temps(tmp_path) == []
    rows = out.read_text().splitlines()
    assert len(rows) == 1 + 6 and len(set(rows)) == len(rows)


def test_temp_files_of_live_writers_are_kept(tmp_path) -> None:
    target = tmp_path / "out.csv"
    live = tmp_path / f".out.csv.{os.getppid()}.abcd1234.tmp"  # the parent process is alive
    dead = tmp_path / ".out.csv.999999999.abcd1234.tmp"  # no such process
    legacy = tmp_path / ".out.csv.k3j_x9q1.tmp"  # tempfile.mkstemp's naming, before this fix
    other = tmp_path / ".other.csv.999999999.abcd1234.tmp"
    for path in (live, dead, legacy, other):
        path.write_text("x")
    files.write_atomic(target, "a,b\n")
    assert target.read_text() == "a,b\n"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == sorted(
        [live.name, other.name]
    )


def test_non_finite_scores_are_null_in_strict_json(images, model_dir, tmp_path, monkeypatch):
    def nan_scores(self, images, texts):
        return torch.full((len(texts) if isinstance(texts, list) else len(images),), torch.nan)

    def nan_cosine(self, images, texts):
        return torch.full((len(images),), torch.nan)

    monkeypatch.setattr(CLIPScorer, "score", nan_scores)
    monkeypatch.setattr(CLIPScorer, "cosine", nan_cosine)
    assert main([*GEN, "--out", str(tmp_path / "gen")]) == 0
    [json_file] = (tmp_path / "gen").glob("*.json")
    sidecar = _strict_json(json_file.read_text())
    assert sidecar["scores"] == {"shapes": None}
    out = tmp_path / "s.jsonl"
    argv = ["score", str(images), "--prompt", PROMPT, "--out", str(out), "--no-progress"]
    assert main([*argv, "--model", f"local-dir:{model_dir}"]) == 0
    rows = [_strict_json(line) for line in out.read_text().splitlines()]
    assert len(rows) == 6 and all(r["cosine"] is None for r in rows)
    assert all("non-finite score" in r["error"] for r in rows)


def test_diverging_sampling_is_an_error_not_a_black_image(tmp_path, monkeypatch, capsys) -> None:
    real = cli_generate.load_pipeline

    def nan_unet(*args, **kwargs):
        pipe = real(*args, **kwargs)
        pipe.unet.register_forward_hook(lambda module, inputs, output: (output[0] * torch.nan,))
        return pipe

    monkeypatch.setattr(cli_generate, "load_pipeline", nan_unet)
    assert main([*GEN, "--out", str(tmp_path / "gen")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("clipguide generate: sampling diverged at step 1") and "--cfg" in err
    assert not (tmp_path / "gen").exists() or not list((tmp_path / "gen").iterdir())
