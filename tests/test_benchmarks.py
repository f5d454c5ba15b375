"""Smoke runs of the guidance and scoring benchmarks on tiny fixtures: they run and print their
JSON."""

import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture
def bench_path(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    yield
    for name in ("guidance", "guidance_gpu", "guidance_flops", "cache_key", "negation"):
        sys.modules.pop(name, None)


def _last_json(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_guidance_gpu_tiny_smoke_run(bench_path, capsys):
    import guidance_gpu

    assert guidance_gpu.main(["--tiny", "--steps", "2"]) == 0
    result = _last_json(capsys)
    rows = result["results"]
    assert rows["unguided"]["ratio"] == 1.0
    assert rows["fast_every5_tiny_decoder"]["guided_steps"] >= 1
    assert all("seconds" in row for row in rows.values())


def test_guidance_benchmark_tiny_quick_run(bench_path, capsys):
    import guidance

    assert guidance.main(["--world", "tiny", "--quick", "--images", "2"]) == 0
    result = _last_json(capsys)
    assert set(result["modes"]) == {"fast", "full"}
    assert all(row["cpu_ratio"] > 0 for row in [*result["modes"].values(), *result["sweep"]])
    assert set(result["best_of_n"]) == {"best_of_2", "best_of_4"}


def test_guidance_flops_tiny_counts_every_setting(bench_path, capsys):
    import guidance_flops

    result = guidance_flops.main(["--tiny"])
    assert _last_json(capsys) == json.loads(json.dumps(result))
    rows = result["settings"]
    assert result["unguided_flops"] > 0
    for row in rows.values():  # guidance adds work, more with more guided evaluations
        assert row["ratio"] > 1.0 and row["flops_per_guided_step"] > 0
    assert rows["fast, tiny, every 10"]["ratio"] < rows["fast, tiny decoder"]["ratio"]
    assert (
        rows["full, VAE"]["flops_per_guided_step"]
        > rows["fast, VAE (library defaults)"]["flops_per_guided_step"]
    )
    example = result["readme_example"]  # README's example: one image's peak at batch 4
    assert example["library defaults, batch 4"]["peak_vs_one_image"] <= 1.01
    assert example["earlier defaults, batch 4"]["peak_vs_one_image"] >= 3.5


def test_guidance_gpu_tiny_readme_example_smoke_run(bench_path, capsys):
    import guidance_gpu

    assert guidance_gpu.main(["--tiny", "--example", "--steps", "2"]) == 0
    result = _last_json(capsys)
    assert result["images"] == 4 and result["results"]["unguided"]["ratio"] == 1.0
    assert result["results"]["library_defaults"]["guided_steps"] >= 1


def test_cache_key_benchmark_counts_keys_before_and_now(bench_path, capsys):
    import cache_key

    result = cache_key.main(["--tiny", "--rounds", "1"])
    assert _last_json(capsys) == json.loads(json.dumps(result))
    assert result["select"]["before"]["keys"] == 3 and result["select"]["now"]["keys"] == 1
    run = result["guided_run"]
    assert run["before"]["keys"] == run["before"]["steps"] and run["now"]["keys"] == 1


def test_negation_benchmark_quick_run(bench_path, capsys):
    import negation

    result = negation.main(["--limit", "4"])
    assert _last_json(capsys)["items"] == result["items"] == 4
    assert "structured whole=positive negated=0.5" in result["methods"]
