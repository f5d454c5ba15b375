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
