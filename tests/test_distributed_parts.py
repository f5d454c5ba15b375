"""The Ray engine's parts that need no cluster: work items and manifests, the decoding task and
the model actor's callable, the per-shard Parquet writer and its resume checks, top-k, and the
bad input of ``clipguide score --engine ray`` (each one line, exit 2, before Ray starts)."""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from clipguide.cli import main
from clipguide.cli.score_settings import judge_settings
from clipguide.distributed.jobs import top_k_rows
from clipguide.distributed.parts import (
    JOB_FILE,
    done_shards,
    part_path,
    prepare_output,
    read_output,
    write_parts,
)
from clipguide.distributed.ray_score import (
    NO_PROMPT,
    RAY_EXTRA,
    ImageScorer,
    decode_batch,
    job_items,
    preprocess_for,
    require_ray,
    score_items,
)
from clipguide.distributed.sources import image_paths, read_manifest, work_items
from clipguide.model import load_clip, load_image
from clipguide.scoring import CLIPScorer

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(3)
    (root / "sub").mkdir()
    for i in range(6):
        array = rng.integers(0, 256, (20 + i, 30, 3), dtype=np.uint8)
        Image.fromarray(array).save((root / "sub" if i % 2 else root) / f"im{i}.png")
    Image.fromarray(rng.integers(0, 256, (20, 20, 4), dtype=np.uint8), mode="RGBA").save(
        root / "rgba.png"
    )
    Image.fromarray(rng.integers(0, 65536, (25, 20), dtype=np.uint16)).save(root / "g16.png")
    (root / "bad.png").write_bytes(b"not a png")
    (root / "notes.txt").write_text("skipped")
    return root


# -- work items and manifests -----------------------------------------------------------------
def test_work_items_are_numbered_sharded_and_unique() -> None:
    pairs = [("a.png", "x"), ("b.png", "x"), ("a.png", "x"), ("a.png", "y"), ("c.png", None)]
    items = work_items(pairs, shard_size=2)
    assert [(i["path"], i["prompt"], i["shard"], i["index"]) for i in items] == [
        ("a.png", "x", 0, 0),
        ("b.png", "x", 0, 1),
        ("a.png", "y", 1, 2),
        ("c.png", None, 1, 3),
    ]
    with pytest.raises(ValueError, match="shard_size must be a positive int, got 0"):
        work_items(pairs, shard_size=0)


def test_image_paths_folders_globs_and_files(folder: Path) -> None:
    found = image_paths([folder])
    assert [Path(p).name for p in found] == [
        "bad.png", "g16.png", "im0.png", "im2.png", "im4.png", "rgba.png",
        "im1.png", "im3.png", "im5.png",
    ]  # fmt: skip
    assert image_paths([str(folder / "**" / "im*.png")]) == sorted(
        str(p) for p in folder.rglob("im*.png")
    )
    assert image_paths([folder / "missing.png"]) == [str(folder / "missing.png")]


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl", ".csv"])
def test_manifests_resolve_relative_paths(folder: Path, tmp_path: Path, suffix: str) -> None:
    records = [
        {"path": str(Path(folder.name) / "im0.png"), "prompt": "a red circle"},
        {"path": "s3://bucket/key.png", "prompt": "a blue square"},
        {"path": str(folder / "rgba.png"), "prompt": ""},
    ]
    file = folder.parent / f"manifest{suffix}"
    if suffix == ".parquet":
        pq.write_table(pa.Table.from_pylist(records), file)
    elif suffix == ".jsonl":
        file.write_text("".join(json.dumps(r) + "\n" for r in records))
    else:
        file.write_text("path,prompt\n" + "".join(f"{r['path']},{r['prompt']}\n" for r in records))
    assert read_manifest(file) == [
        (str(folder / "im0.png"), "a red circle"),
        ("s3://bucket/key.png", "a blue square"),
        (str(folder / "rgba.png"), None),  # an empty prompt is no prompt: an error row
    ]


def test_bad_manifests_and_sources_name_the_problem(tmp_path: Path, folder: Path) -> None:
    (tmp_path / "no_path.jsonl").write_text('{"image": "a.png", "prompt": "x"}\n')
    (tmp_path / "bad.jsonl").write_text('{"path": "a.png"}\nnot json\n')
    (tmp_path / "empty.csv").write_text("path,prompt\n")
    (tmp_path / "fake.parquet").write_text("not parquet")
    (tmp_path / "m.txt").write_text("a.png")
    cases = {
        tmp_path / "no_path.jsonl": r"record 1 needs 'path' and 'prompt' fields, got \['image',",
        tmp_path / "bad.jsonl": "line 2 is not JSON",
        tmp_path / "empty.csv": "no records found",
        tmp_path / "fake.parquet": "is not a Parquet file",
        tmp_path / "m.txt": "cannot tell the format from '.txt'",
        tmp_path / "missing.csv": "does not exist",
    }
    for file, message in cases.items():
        with pytest.raises(ValueError, match=message):
            read_manifest(file)
    with pytest.raises(ValueError, match="the manifest .* carries the prompts"):
        job_items(tmp_path / "bad.jsonl", prompt="x")
    with pytest.raises(TypeError, match="prompt must be a str when source is images"):
        job_items(folder)
    with pytest.raises(ValueError, match="no image files found"):
        job_items(str(tmp_path / "*.png"), prompt="x")


# -- decoding task and model actor, called directly -------------------------------------------
def test_decode_task_and_actor_give_the_scorers_numbers(folder: Path) -> None:
    clip = load_clip("shapes")
    pre = clip.preprocess
    im0 = str(folder / "im0.png")
    items = job_items(folder, "a red circle") + [
        {"path": im0, "prompt": None, "shard": 0, "index": 99, "file": im0.encode()}
    ]
    batch = {k: np.array([i[k] for i in items], dtype=object) for k in items[0]}
    decoded = decode_batch(batch, pre)
    errors = dict(zip([Path(p).name for p in decoded["path"]], decoded["error"], strict=True))
    assert errors["bad.png"] == "not a recognised image format"
    assert list(decoded["error"]).count(NO_PROMPT) == 1
    rgba = [i for i, p in enumerate(decoded["path"]) if p.endswith("rgba.png")][0]
    expected = pre.from_pil([load_image(folder / "rgba.png")])[0]
    assert torch.equal(pre.from_uint8(torch.from_numpy(decoded["pixels"][[rgba]]))[0], expected)
    rows = ImageScorer("shapes", None, None, 100.0, pre)(decoded)
    assert "pixels" not in rows and list(rows["index"]) == list(batch["index"])
    ok = [i for i, e in enumerate(rows["error"]) if not e]
    assert len(ok) == len(items) - 2
    paths = [rows["path"][i] for i in ok]
    cos = CLIPScorer(clip, progress=False).cosine(paths, "a red circle").numpy()
    assert np.abs(rows["cosine"][ok] - cos).max() <= 1e-6
    assert np.isnan(rows["cosine"][[i for i in range(len(items)) if i not in ok]]).all()
    with pytest.raises(ValueError, match="preprocessing .* differs"):
        ImageScorer(
            "shapes", None, None, 100.0, type(pre)(image_size=32, mean=pre.mean, std=pre.std)
        )


def test_preprocess_in_two_halves_equals_from_pil(folder: Path) -> None:
    pre = load_clip("shapes").preprocess
    images = [load_image(p) for p in sorted(folder.glob("*.png")) if p.name != "bad.png"]
    halves = pre.from_uint8(torch.stack([pre.crop_uint8(i) for i in images]))
    reference = torch.stack([pre.pil_transform()(i) for i in images])
    assert torch.equal(halves, pre.from_pil(images))
    assert torch.allclose(halves, reference, atol=1e-6)


def test_preprocess_for_reads_what_load_clip_builds() -> None:
    """The driver reads an open_clip name's preprocessing from configs alone: it must equal
    what ``load_clip`` gives the actors (else each refuses to start); other sources load."""
    with pytest.warns(UserWarning, match="random weights"):
        clip = load_clip("ViT-B-32", pretrained=None, towers=("vision",), device="cpu")
    assert preprocess_for("ViT-B-32", None) == clip.preprocess
    assert preprocess_for("shapes", None) == load_clip("shapes").preprocess


# -- parts: written whole per shard, resume checks ---------------------------------------------
def _batch(indices: list[int], shard_of) -> pa.Table:
    return pa.table(
        {
            "path": [f"p{i}.png" for i in indices],
            "prompt": [None if i == 3 else "x" for i in indices],
            "shard": [shard_of(i) for i in indices],
            "index": indices,
            "cosine": [float("nan") if i == 2 else i / 10 for i in indices],
            "clipscore": [float("nan") if i == 2 else i * 10.0 for i in indices],
            "error": ["boom" if i == 2 else "" for i in indices],
        }
    )


def test_parts_are_written_whole_in_input_order(tmp_path: Path) -> None:
    shard_of = lambda i: i // 4  # noqa: E731
    (tmp_path / ".part-000001.parquet.999999999.ab.tmp").write_text("left by a killed writer")
    batches = [_batch([5, 0, 7], shard_of), _batch([3, 1], shard_of), _batch([4, 2, 6], shard_of)]
    seen = []
    written = write_parts(batches, tmp_path, {0: 4, 1: 4}, on_part=seen.append)
    assert sorted(seen) == sorted(written) == [part_path(tmp_path, 0), part_path(tmp_path, 1)]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "part-000000.parquet", "part-000001.parquet",
    ]  # fmt: skip
    rows = read_output(tmp_path).to_pylist()
    assert [r["path"] for r in rows] == [f"p{i}.png" for i in range(8)]
    assert rows[2] == {"path": "p2.png", "prompt": "x", "cosine": None, "clipscore": None,
                       "error": "boom"}  # fmt: skip
    assert rows[3]["prompt"] is None and rows[1]["cosine"] == 0.1
    nulls = _batch([8, 9], lambda i: 2).set_column(1, "prompt", pa.nulls(2))  # typed null
    write_parts([nulls, _batch([10, 11], lambda i: 2)], tmp_path, {2: 4})
    assert [r["prompt"] for r in read_output(tmp_path).to_pylist()[8:]] == [None, None, "x", "x"]
    with pytest.raises(RuntimeError, match="shard 1: more rows"):
        write_parts([_batch([4, 5, 6], shard_of)], tmp_path / "x", {1: 2})
    with pytest.raises(RuntimeError, match=r"shards \[1\] did not receive all their rows"):
        write_parts([_batch([4, 5], shard_of)], tmp_path / "y", {1: 4})
    with pytest.raises(RuntimeError, match="a row of shard 0, which this run does not score"):
        write_parts([_batch([0], shard_of)], tmp_path / "z", {1: 4})


def test_resume_checks(tmp_path: Path) -> None:
    items = work_items([(f"{i}.png", "x") for i in range(10)], 4)
    out = tmp_path / "out"
    assert prepare_output(out, items, 4, resume=False, overwrite=False) == set()
    assert json.loads((out / JOB_FILE).read_text())["shards"] == 3
    write_parts([_batch([0, 1, 2, 3], lambda i: 0)], out, {0: 4})
    with pytest.raises(ValueError, match="holds a scoring job; pass resume=True"):
        prepare_output(out, items, 4, resume=False, overwrite=False)
    assert prepare_output(out, items, 4, resume=True, overwrite=False) == {0}
    with pytest.raises(ValueError, match="holds another job .* shards of 4; this one: 10 in"):
        prepare_output(out, items, 5, resume=True, overwrite=False)
    other = work_items([(f"{i}.png", "y") for i in range(10)], 4)
    with pytest.raises(ValueError, match="holds another job"):
        prepare_output(out, other, 4, resume=True, overwrite=False)
    with pytest.raises(ValueError, match="resume and overwrite contradict"):
        prepare_output(out, items, 4, resume=True, overwrite=True)
    assert prepare_output(out, other, 4, resume=False, overwrite=True) == set()
    assert done_shards(out) == set()
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file; the Ray engine writes a folder"):
        prepare_output(tmp_path / "file", items, 4, resume=False, overwrite=False)


def test_a_resume_with_another_judge_or_scale_is_refused_naming_it(tmp_path: Path) -> None:
    """The job's settings are part of its fingerprint: run_job refuses before Ray runs."""
    from clipguide.distributed.jobs import run_job

    items = work_items([(f"{i}.png", "x") for i in range(6)], 4)
    out = tmp_path / "out"
    prepare_output(out, items, 4, False, False, settings=judge_settings("shapes", None, None, 100))
    write_parts([_batch([0, 1, 2, 3], lambda i: 0)], out, {0: 4})
    changes = {
        "model='shapes'; this run: model='ViT-B-32'": dict(model="ViT-B-32"),
        "scale=100.0; this run: scale=2.5": dict(model="shapes", scale=2.5),
        "dtype=None; this run: dtype='fp16'": dict(model="shapes", dtype="fp16"),
        "pretrained=None; this run: pretrained='x.pt'": dict(model="shapes", pretrained="x.pt"),
    }
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    for message, options in changes.items():
        with pytest.raises(ValueError, match=f"was scored with {message}; resume with the same"):
            run_job(items, out, shard_size=4, resume=True, **options)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # nothing written


def test_run_job_without_items_writes_nothing(tmp_path: Path) -> None:
    from clipguide.distributed.jobs import run_job

    with pytest.raises(ValueError, match="items is empty: nothing to score"):
        run_job([], tmp_path / "out", shard_size=10, model="shapes")
    assert not (tmp_path / "out").exists()


def test_a_file_name_that_is_not_utf8_is_an_item_and_decoded(folder: Path, tmp_path) -> None:
    """b"caf\\xe9.png": the item's path is its text with \\xNN (as the local engine writes
    it), the job's fingerprint takes it, and the decoding task opens the file."""
    import os

    odd = tmp_path / os.fsdecode(b"caf\xe9.png")
    odd.write_bytes((folder / "im0.png").read_bytes())
    items = job_items(tmp_path, "x")
    assert [i["path"] for i in items] == [str(tmp_path / "caf\\xe9.png")]
    prepare_output(tmp_path / "out", items, 10, False, False)  # its fingerprint: no error
    pa.Table.from_pylist(items)  # what Ray Data makes of the items: valid UTF-8
    batch = {k: np.array([i[k] for i in items], dtype=object) for k in items[0]}
    decoded = decode_batch(batch, load_clip("shapes").preprocess)
    assert list(decoded["error"]) == [""] and "file" not in decoded


def test_top_k_rows_and_bad_k() -> None:
    table = pa.table(
        {
            "path": ["a", "b", "c", "d", "e"],
            "prompt": ["x", "x", "y", "x", "y"],
            "cosine": [0.1, 0.3, 0.2, 0.3, None],
            "clipscore": [10.0, 30.0, 20.0, 30.0, None],
            "error": ["", "", "", "", "bad"],
        }
    )
    best = top_k_rows(table, 2)
    assert best[["path", "prompt"]].values.tolist() == [["b", "x"], ["d", "x"], ["c", "y"]]
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="k must be a positive int"):
            top_k_rows(table, bad)


# -- options, Ray missing, lazy import ---------------------------------------------------------
def test_score_items_checks_options_before_ray_runs() -> None:
    items = work_items([("a.png", "x")], 1)
    cases = {
        "concurrency": 0, "batch_size": 0, "gpus_per_worker": -1.0, "cpus_per_worker": 0,
        "decode_cpus": float("nan"),
    }  # fmt: skip
    for name, value in cases.items():
        with pytest.raises(ValueError, match=f"{name} must be .*, got {value!r}"):
            score_items(items, **{name: value})
    with pytest.raises(ValueError, match="items is empty"):
        score_items([])


def test_without_ray_the_error_names_the_extra(monkeypatch, tmp_path: Path, capsys) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    with pytest.raises(ImportError, match="clipguide\\[ray\\]"):
        require_ray()
    code = main(
        ["score", str(tmp_path), "--prompt", "x", "--engine", "ray", "--out", str(tmp_path / "o")]
    )
    assert code == 2
    assert RAY_EXTRA in capsys.readouterr().err


def test_the_library_imports_ray_only_inside_functions() -> None:
    for path in [*(ROOT / "clipguide").rglob("*.py")]:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in tree.body:  # module level only
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            assert not [n for n in names if n.split(".")[0] in ("ray", "pyarrow")], path


# -- clipguide score --engine ray: bad input, before Ray starts ---------------------------------
def _cases(folder: Path, tmp: Path) -> list[tuple[list[str], str]]:
    base = ["score", str(folder), "--prompt", "x", "--no-progress"]
    ray = [*base, "--engine", "ray"]
    (tmp / "m.csv").write_text("image,prompt\na.png,x\n")
    (tmp / "paths.csv").write_text("path\na.png\n")  # no prompt column: every row would fail
    return [
        ([*base, "--out", str(tmp / "o.csv"), "--address", "auto"], "--address needs --engine ray"),
        ([*base, "--out", str(tmp / "o.csv"), "--concurrency", "2"], "--concurrency needs --engine"),
        ([*ray, "--out", str(tmp / "o.csv")], "--out .*o.csv: --engine ray writes a folder"),
        ([*ray, "--out", str(tmp / "o"), "--robust"], "--robust is not supported with --engine ray"),
        ([*ray, "--out", str(tmp / "o"), "--format", "csv"], "--format is not supported"),
        ([*ray, "--out", str(tmp / "o"), "--device", "cpu"], "--device is not supported with --engine ray: .*--gpus"),
        ([*ray, "--out", str(tmp / "o"), "--concurrency", "0"], "--concurrency: expected a positive"),
        ([*ray, "--out", str(tmp / "o"), "--gpus-per-worker", "-1"], "--gpus-per-worker: expected"),
        ([*ray, "--out", str(tmp / "o"), "--cpus-per-worker", "0"], "--cpus-per-worker: expected"),
        ([*ray, "--out", str(tmp / "o"), "--shard-size", "x"], "--shard-size: expected a positive"),
        ([*ray, "--out", str(tmp / "o"), "--engine", "spark"], "--engine: invalid choice: 'spark'"),
        ([*ray, "--out", str(tmp / "f.txt" / "o")], "--out .*f.txt.* is a file"),
        (["score", str(folder), "--prompts", str(tmp / "m.csv"), "--engine", "ray", "--out",
          str(tmp / "o")], "PATHS with --prompt, or a manifest --prompts FILE .* alone; got both"),
        (["score", "--prompts", str(tmp / "m.csv"), "--engine", "ray", "--out", str(tmp / "o")],
         "record 1 needs 'path' and 'prompt' fields"),
        (["score", "--prompts", str(tmp / "nope.parquet"), "--engine", "ray", "--out",
          str(tmp / "o")], "nope.parquet does not exist"),
        ([*ray, "--out", str(tmp / "taken")], "--out .*taken holds a scoring job; pass .*--resume"),
        ([*ray, "--out", str(tmp / "taken"), "--resume", "--shard-size", "3"],
         "--out .*taken holds another job"),
        # the judge and scale are the job's too (taken: the default judge, scale 100)
        ([*ray, "--out", str(tmp / "taken"), "--resume", "--model", "shapes"],
         "--out .*taken was scored with --model 'ViT-bigG-14'; this run: --model 'shapes'; "
         "resume with the same settings, or pass --overwrite"),
        ([*ray, "--out", str(tmp / "taken"), "--resume", "--hessel"],
         r"scored with no --hessel \(scale 100\); this run: --hessel \(scale 2.5\)"),
        ([*ray, "--out", str(tmp / "taken"), "--resume", "--dtype", "fp16"],
         "scored with --dtype left out; this run: --dtype 'fp16'"),
        ([*ray, "--out", str(tmp / "taken"), "--resume", "--pretrained", "x.bin"],
         "scored with --pretrained 'laion2b_s39b_b160k'; this run: --pretrained 'x.bin'"),
        (["score", "--prompts", str(tmp / "paths.csv"), "--engine", "ray", "--out",
          str(tmp / "o")], r"paths.csv: no 'prompt' field in any record .*got \['path'\]"),
        ([*ray, "--out", str(tmp / "o"), "--resume", "--overwrite"], "resume and overwrite"),
    ]  # fmt: skip


def test_engine_ray_unknown_model_fails_before_ray(folder: Path, tmp_path: Path, capsys) -> None:
    import ray

    out = tmp_path / "o"
    argv = ["score", str(folder), "--prompt", "x", "--engine", "ray", "--out", str(out)]
    assert main([*argv, "--model", "no-such-model"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("clipguide score: --model no-such-model: ") and len(err.splitlines()) == 1
    assert "Registered names" in err and not out.exists() and not ray.is_initialized()


def test_engine_ray_bad_input_is_one_line_exit_2(folder: Path, tmp_path: Path, capsys) -> None:
    (tmp_path / "f.txt").write_text("a file")
    default_judge = judge_settings(None, None, None, 100.0)
    items = job_items(folder, "x")
    prepare_output(tmp_path / "taken", items, 1000, False, False, settings=default_judge)
    import ray

    for argv, message in _cases(folder, tmp_path):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith("clipguide score: "), err
        assert __import__("re").search(message, err), (message, err)
    assert not ray.is_initialized()  # every case was refused before Ray started


def test_best_sheets_for_a_sample_of_prompts(folder: Path, tmp_path: Path) -> None:
    from clipguide.distributed import best_sheets

    paths = [str(p) for p in sorted(folder.rglob("im*.png"))]
    frame = top_k_rows(
        pa.table(
            {
                "path": paths + [str(folder / "bad.png")],
                "prompt": ["a b", "a b", "c", "c", "d e", "f", "f"],
                "cosine": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7],
                "clipscore": [10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0],
                "error": [""] * 7,
            }
        ),
        2,
    )
    files = best_sheets(frame, tmp_path / "sheets", sample=3, seed=1, thumb=32)
    assert len(files) == 3 and all(f.is_file() for f in files)
    assert files == best_sheets(frame, tmp_path / "sheets", sample=3, seed=1, thumb=32)
    assert [f.name.split("-", 1)[1] for f in files] == sorted(
        f.name.split("-", 1)[1] for f in files
    )
    widths = {f.name: Image.open(f).size[0] for f in files}
    assert max(widths.values()) > min(widths.values())  # sheets of 2 images and of 1
    with pytest.raises(ValueError, match="sample must be a positive int, got 0"):
        best_sheets(frame, tmp_path, sample=0)
