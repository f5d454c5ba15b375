"""Smoke run of benchmarks/regions.py on the tiny fixtures: it runs and prints its JSON."""

import json
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def test_regions_benchmark_tiny_smoke_run(monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    try:
        import regions

        result = regions.main(["--tiny"])
    finally:
        for name in ("regions", "guidance_gpu", "guidance_flops"):
            sys.modules.pop(name, None)
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == json.loads(
        json.dumps(result)
    )
    timing = result["cpu"]["tiny_sdxl_64px"]
    assert timing["0_regions"]["ratio"] == 1.0 and timing["4_regions"]["seconds"] > 0
    assert timing["2_regions_placed"]["seconds"] > 0 and timing["2_placed_only"]["seconds"] > 0
    rows = result["flops"]["rows"]
    assert rows["0_regions"]["unet_ratio"] == 1.0
    assert 1.0 < rows["2_regions"]["unet_ratio"] < rows["4_regions"]["unet_ratio"]
    # a region's extra work is at most the conditional half of the cross-attention
    share = result["flops"]["cross_attention_share_of_unet"]
    assert 0 < rows["2_regions"]["extra_per_region_share_of_unet"] <= share / 2


def test_regions_quality_smoke_run_prints_picks_with_and_without_the_layout_term(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    try:
        import regions_quality

        argv = ["--split", "dev", "--limit", "7", "--n", "2", "--cost-items", "0"]
        result = regions_quality.main([*argv, "--cache", str(tmp_path), "--select-cost", "2"])
    finally:
        for name in ("regions_quality", "regions_methods", "shapes_eval", "shapes_quality"):
            sys.modules.pop(name, None)
    out = capsys.readouterr().out
    assert json.loads(out.strip().splitlines()[-1]) == json.loads(json.dumps(result))
    chosen = result["modes"]["chosen"]
    term, noterm = chosen["best_of_2_laid1+plain1"], chosen["best_of_2_laid1+plain1_noterm"]
    assert (
        set(term["oracle_vs_noterm"]) == set(term["laid1+plain1"])
        and "overall" in noterm["laid1+plain1_noterm"]
    )
    cost = chosen["select_cpu_with_vs_without_layout_term"]
    assert cost["ratio"] > 1 and cost["extra_views_per_image"] >= 3  # two boxes + the empty view
