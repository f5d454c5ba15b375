"""Large jobs on Ray Data: a local 2-CPU cluster scores a few hundred images (a corrupt file,
RGBA and 16-bit PNGs among them) exactly as the in-process CLI does; a job killed with SIGKILL
resumes with nothing lost or duplicated; top-k per prompt; the engine's bad input.

Ray failures show up as hangs, so every test that touches the cluster runs under a hard
timeout (:func:`_hard_timeout`): SIGALRM fails the test, and faulthandler ends the process,
with every thread's traceback, if even that does not return.
"""

from __future__ import annotations

import csv
import faulthandler
import json
import os
import signal
import subprocess
import sys
import textwrap
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import ray
from PIL import Image

from clipguide.cli import main
from clipguide.model import load_clip
from clipguide.scoring import CLIPScorer

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = ("a red circle", "two blue squares", "a small green triangle")
IMAGES = 300


@contextmanager
def _hard_timeout(seconds: int):
    """Fail the test after ``seconds``; end the process 30 s later if the failure hangs too."""

    def expire(signum, frame):
        raise TimeoutError(f"a Ray test ran past its {seconds} s limit (a Ray hang)")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    faulthandler.dump_traceback_later(seconds + 30, exit=True, file=sys.__stderr__)
    try:
        yield
    finally:
        signal.alarm(0)
        faulthandler.cancel_dump_traceback_later()
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture(scope="module")
def cluster():
    """One local Ray cluster with 2 CPUs for the module (its address, for other drivers)."""
    with _hard_timeout(300):  # hang guards: generous, a loaded 2-core machine is slow
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """300 small images: PNGs and JPEGs of varied sizes, an RGBA PNG, a 16-bit grey PNG, a
    palette PNG with transparency, a corrupt PNG and a truncated one."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    (root / "sub").mkdir()
    for i in range(IMAGES - 5):
        h, w = int(rng.integers(24, 72)), int(rng.integers(24, 72))
        image = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        target = (root / "sub" if i % 7 == 0 else root) / f"img{i:03d}"
        image.save(target.with_suffix(".jpg" if i % 9 == 0 else ".png"))
    rgba = rng.integers(0, 256, (40, 50, 4), dtype=np.uint8)
    Image.fromarray(rgba, mode="RGBA").save(root / "rgba.png")
    Image.fromarray(rng.integers(0, 65536, (45, 30), dtype=np.uint16)).save(root / "grey16.png")
    Image.new("P", (30, 30), 5).save(root / "palette.png", transparency=5)
    (root / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(40)))
    (root / "truncated.png").write_bytes((root / "rgba.png").read_bytes()[:90])
    assert Image.open(root / "grey16.png").mode.startswith("I")
    return root


def _all_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix in (".png", ".jpg"))


@pytest.fixture(scope="module")
def manifest(folder: Path) -> Path:
    """A Parquet manifest: every image with one of three prompts (relative paths), plus a
    record without a prompt and one for a missing file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    images = _all_images(folder)
    paths = [os.path.relpath(p, folder) for p in images] + ["img001.png", "missing.png"]
    prompts = [PROMPTS[i % 3] for i in range(len(images))] + [None, PROMPTS[0]]
    file = folder / "manifest.parquet"
    pq.write_table(pa.table({"path": paths, "prompt": prompts}), file)
    return file


@pytest.fixture(scope="module")
def shapes_scorer() -> CLIPScorer:
    return CLIPScorer(load_clip("shapes"), progress=False)


def _read_csv(path: Path) -> dict[str, dict[str, str]]:
    with path.open(newline="") as handle:
        return {row["path"]: row for row in csv.DictReader(handle)}


def test_ray_engine_writes_the_cli_rows(cluster, folder: Path, tmp_path: Path) -> None:
    """`clipguide score --engine ray` (2 actors) gives the in-process CLI's rows, once each."""
    from clipguide.distributed import read_output

    common = [str(folder), "--prompt", PROMPTS[0], "--model", "shapes", "--no-progress"]
    assert main(["score", *common, "--out", str(tmp_path / "local.csv")]) == 0
    local = _read_csv(tmp_path / "local.csv")
    out = tmp_path / "parts"
    ray_args = ["--engine", "ray", "--concurrency", "2", "--batch-size", "16", "--shard-size", "64"]
    with _hard_timeout(600):
        assert main(["score", *common, "--out", str(out), *ray_args]) == 0
    table = read_output(out)
    assert table.column_names == ["path", "prompt", "cosine", "clipscore", "error"]
    rows = table.to_pylist()
    assert len(rows) == IMAGES == len({row["path"] for row in rows}) == len(local)
    assert sorted(p.name for p in out.glob("part-*.parquet")) == [
        f"part-{i:06d}.parquet" for i in range(5)
    ]
    errors = {Path(r["path"]).name: r["error"] for r in rows if r["error"]}
    assert set(errors) == {"corrupt.png", "truncated.png"}
    for row in rows:
        expected = local[row["path"]]
        assert row["error"] == expected["error"] and row["prompt"] == expected["prompt"]
        if row["error"]:
            assert row["cosine"] is None and row["clipscore"] is None
            continue
        assert abs(row["cosine"] - float(expected["cosine"])) <= 1e-5, row["path"]
        assert abs(row["clipscore"] - float(expected["clipscore"])) <= 1e-3, row["path"]


def _rows_of_both_engines(argv: list[str], out: Path, capsys) -> tuple[list, list, str]:
    """``clipguide score ARGV`` in-process (CSV) and on the cluster (parts in ``out``): the
    rows of each as (path, prompt, cosine rounded, error?), and the Ray run's printed line."""
    from clipguide.distributed import read_output

    common = ["score", *argv, "--model", "shapes", "--no-progress"]
    assert main([*common, "--out", str(out.with_suffix(".csv"))]) == 0
    local = [
        (r["path"], r["prompt"] or None, round(float(r["cosine"] or "nan"), 4), bool(r["error"]))
        for r in csv.DictReader(out.with_suffix(".csv").open(newline="", encoding="utf-8"))
    ]
    capsys.readouterr()
    with _hard_timeout(600):
        assert main([*common, "--out", str(out), "--engine", "ray"]) == 0
    rows = [
        (r["path"], r["prompt"], round(r["cosine"] if r["cosine"] is not None else float("nan"), 4),
         bool(r["error"]))
        for r in read_output(out).to_pylist()
    ]  # fmt: skip
    return local, rows, capsys.readouterr().out


def test_both_engines_give_a_row_per_image_and_caption(cluster, tmp_path: Path, capsys) -> None:
    """A COCO-style manifest (one image, five captions) and a file name that is not UTF-8:
    the local engine and the Ray engine write the same rows."""
    root = tmp_path / "images"
    root.mkdir()
    rng = np.random.default_rng(7)
    for name in ("a.png", "b.png", os.fsdecode(b"caf\xe9.png")):
        Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(root / name)
    manifest = tmp_path / "captions.jsonl"
    records = [("a.png", p) for p in (*PROMPTS, "a dot", "an empty canvas")]
    records += [("b.png", PROMPTS[1]), ("b.png", PROMPTS[2])]
    manifest.write_text("".join(json.dumps({"path": f"images/{p}", "prompt": c}) + "\n"
                                for p, c in records))  # fmt: skip
    local, rows, printed = _rows_of_both_engines(
        ["--prompts", str(manifest)], tmp_path / "m", capsys
    )
    assert [(Path(r[0]).name, r[1]) for r in rows] == records
    assert local == rows and len({r[2] for r in rows[:5]}) == 5 and not any(r[3] for r in rows)
    assert printed.splitlines() == [f"{tmp_path / 'm'}: 7 rows, 0 errors in 1 part (1 written now)"]
    local, rows, _ = _rows_of_both_engines(
        [str(root), "--prompt", PROMPTS[0]], tmp_path / "f", capsys
    )
    assert [Path(r[0]).name for r in rows] == ["a.png", "b.png", "caf\\xe9.png"]
    assert local == rows and not any(r[3] for r in rows)  # the odd name scored, in both


_KILLED_DRIVER = """
import os, signal, sys
import ray
ray.init(address=sys.argv[1], log_to_driver=False)
ray.data.DataContext.get_current().enable_progress_bars = False
from clipguide.distributed import score_to_parquet

written = []

def on_part(path):
    written.append(path)
    if len(written) == 3:  # killed mid-job: other shards are in flight
        os.kill(os.getpid(), signal.SIGKILL)

score_to_parquet(sys.argv[2], sys.argv[3], model="shapes", shard_size=30, batch_size=10,
                 on_part=on_part)
"""


def test_killed_job_resumes_without_loss_or_duplicates(
    cluster, manifest: Path, tmp_path: Path, shapes_scorer: CLIPScorer
) -> None:
    from clipguide.distributed import read_output, score_to_parquet
    from clipguide.distributed.ray_score import NO_PROMPT

    out = tmp_path / "parts"
    script = tmp_path / "driver.py"
    script.write_text(textwrap.dedent(_KILLED_DRIVER))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    run = subprocess.run(
        [sys.executable, str(script), cluster, str(manifest), str(out)],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert run.returncode == -signal.SIGKILL, run.stderr[-2000:]
    before = {p.name: p.read_bytes() for p in out.glob("part-*.parquet")}
    assert len(before) == 3  # the job was killed with 8 of 11 shards to go
    resumed: list[Path] = []
    with _hard_timeout(600):
        summary = score_to_parquet(
            manifest, out, model="shapes", shard_size=30, batch_size=10, resume=True,
            on_part=resumed.append,
        )  # fmt: skip
    assert summary == {
        "items": IMAGES + 2, "shards": 11, "skipped": 3, "written": 8, "rows": IMAGES + 2,
        "errors": 4,
    }  # fmt: skip
    assert {p.name for p in resumed}.isdisjoint(before)
    assert all((out / name).read_bytes() == data for name, data in before.items())
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    rows = read_output(out).to_pylist()
    assert len(rows) == IMAGES + 2 == len({(r["path"], r["prompt"]) for r in rows})
    errors = {(Path(r["path"]).name, r["prompt"]): r["error"] for r in rows if r["error"]}
    names = sorted(k[0] for k in errors)
    assert names == ["corrupt.png", "img001.png", "missing.png", "truncated.png"]
    assert errors[("img001.png", None)] == NO_PROMPT
    assert errors[("missing.png", PROMPTS[0])] == "file not found"
    ok = [r for r in rows if not r["error"]]
    expected = shapes_scorer.cosine([r["path"] for r in ok], [r["prompt"] for r in ok])
    got = np.array([r["cosine"] for r in ok])
    assert np.abs(got - expected.numpy()).max() <= 1e-5
    again: list[Path] = []
    with _hard_timeout(300):  # nothing left: no part rewritten
        score_to_parquet(
            manifest, out, model="shapes", shard_size=30, resume=True, on_part=again.append
        )
    assert again == []


def test_top_k_per_prompt_on_the_cluster(cluster, tmp_path: Path) -> None:
    """The groupby on Ray gives the pandas reference: best first, error rows left out."""
    from clipguide.distributed import top_k_per_prompt, top_k_rows

    rng = np.random.default_rng(1)
    n = 400
    rows = {
        "path": [f"img{i:04d}.png" for i in range(n)],
        "prompt": [PROMPTS[i % 3] for i in range(n)],
        "cosine": rng.random(n).round(3).tolist(),
        "error": ["" if i % 11 else "not a recognised image format" for i in range(n)],
    }
    rows["clipscore"] = [100 * c for c in rows["cosine"]]
    import pandas as pd

    frame = pd.DataFrame(rows)
    frame.loc[frame["error"] != "", ["cosine", "clipscore"]] = None
    expected = top_k_rows(frame, 5)
    assert len(expected) == 15 and set(expected["error"]) == {""}
    for prompt, group in expected.groupby("prompt"):
        ok = frame[(frame["prompt"] == prompt) & (frame["error"] == "")]
        assert list(group["clipscore"]) == sorted(ok["clipscore"], reverse=True)[:5]
    with _hard_timeout(300):
        dataset = ray.data.from_pandas(frame).repartition(4)
        got = top_k_per_prompt(dataset, 5, num_partitions=2).to_pandas()
    got = got.sort_values(["prompt", "clipscore", "path"], ascending=[True, False, True])
    columns = ["path", "prompt", "clipscore"]
    assert got[columns].values.tolist() == expected[columns].values.tolist()


def test_a_pool_the_cluster_cannot_hold_is_refused(cluster, folder: Path, tmp_path: Path, capsys):
    """2 CPUs, no GPU: Ray would wait forever for these workers; the error says why instead."""
    from clipguide.distributed import job_items, score_items

    items = job_items(folder, PROMPTS[0])
    with pytest.raises(ValueError, match="needs 2 GPUs; the Ray cluster has 0"):
        score_items(items, model="shapes", concurrency=2, gpus_per_worker=1.0)
    with pytest.raises(ValueError, match="reserves 1.5 of the cluster's 2 CPUs"):
        score_items(items, model="shapes", concurrency=3, cpus_per_worker=0.5)
    argv = ["score", str(folder), "--prompt", "x", "--engine", "ray", "--out", str(tmp_path / "o")]
    with _hard_timeout(300):
        assert main([*argv, "--gpus-per-worker", "1"]) == 2
    assert "--gpus-per-worker 1 x --concurrency 1 needs 1 GPUs" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # refused before anything was written
    with _hard_timeout(300):  # a worker that cannot load the model: one line, no hang
        code = main([*argv, "--model", "ViT-B-32", "--pretrained", "no_such_tag"])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 1 and err.startswith("clipguide score: --model ViT-B-32: a model worker could")
    assert "ValueError: pretrained='no_such_tag' is neither a file nor a known tag" in err
