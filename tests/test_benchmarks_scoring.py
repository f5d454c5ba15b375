"""Smoke runs of the scoring benchmarks: the text-cache key's share and the negation experiment
run and print their JSON."""

import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture
def bench_path(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    yield
    for name in ("cache_key", "negation", "shapes_eval"):
        sys.modules.pop(name, None)


def _last_json(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


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
