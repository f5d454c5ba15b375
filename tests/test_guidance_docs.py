"""The guidance docstrings quote no figure that the benchmarks' report (README) does not."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from clipguide.guidance import CLIPGuidance, GuidanceSettings

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.mark.parametrize("documented", [GuidanceSettings, CLIPGuidance], ids=lambda c: c.__name__)
def test_docstring_figures_are_measured_ones(documented):
    readme = README.read_text()
    figures = re.findall(r"[+\-]?\d+\.\d+", documented.__doc__ or "")
    assert [f for f in figures if f not in readme] == []
