"""The guidance docstrings quote no figure that the benchmarks' report (README, docs/) does not."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from clipguide.guidance import CLIPGuidance, GuidanceSettings

ROOT = Path(__file__).resolve().parents[1]
REPORT = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


@pytest.mark.parametrize("documented", [GuidanceSettings, CLIPGuidance], ids=lambda c: c.__name__)
def test_docstring_figures_are_measured_ones(documented):
    readme = "\n".join(page.read_text() for page in REPORT)
    figures = re.findall(r"[+\-]?\d+\.\d+", documented.__doc__ or "")
    assert [f for f in figures if f not in readme] == []
