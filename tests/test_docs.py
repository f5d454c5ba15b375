"""README leads with use; the measurements live in docs/; every link in README, docs/ and the
notebooks resolves."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
# a header row of each measurement table that moved from README to docs/measurements.md
MEASUREMENT_TABLES = [
    "| mode | oracle | vs plain | vs best-of-N |",
    "| setting | guided evaluations of 30 | TFLOP per guided step |",
    "| family | CLIPScore efficiency | pairwise | pick accuracy |",
]


def _slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)  # no headings in code
    return {_slug(m) for m in re.findall(r"^#+ (.+)$", text, re.M)}


def _headings(path: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    return re.findall(r"^## (.+)$", text, re.M)


def test_readme_leads_with_use():
    headings = _headings(README)
    use = ["Set up", "SDXL + bigG in ten lines", "Regions and layouts", "Guidance", "Command line"]
    use += ["Selection: which candidate best-of-N keeps", "Large jobs", "Measurements"]
    missing = [h for h in use if h not in headings]
    assert not missing, f"README lacks sections {missing}; has {headings}"
    positions = [headings.index(h) for h in use]
    assert positions == sorted(positions), f"README's sections are out of order: {headings}"
    assert headings[: len(use)] == use, f"README's first sections: {headings[: len(use)]}"


@pytest.mark.parametrize("header", MEASUREMENT_TABLES)
def test_measurement_tables_live_in_docs(header):
    assert header not in README.read_text()
    assert header in (ROOT / "docs" / "measurements.md").read_text()


def _prose(page: Path) -> str:
    """A page's Markdown: the file, or a notebook's Markdown cells."""
    if page.suffix != ".ipynb":
        return page.read_text()
    cells = json.loads(page.read_text())["cells"]
    return "\n\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")


@pytest.mark.parametrize("page", [README, *DOCS, *NOTEBOOKS], ids=lambda p: p.name)
def test_relative_links_resolve(page):
    text = re.sub(r"```.*?```", "", _prose(page), flags=re.S)
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue  # an absolute URL
        file, _, anchor = target.partition("#")
        path = (page.parent / file).resolve() if file else page
        if not path.exists():
            broken.append(f"{target} (no file {path.relative_to(ROOT)})")
        elif anchor and path.suffix == ".md" and anchor not in _anchors(path):
            broken.append(f"{target} (no heading with anchor #{anchor} in {path.name})")
    assert not broken, f"{page.name}: broken links {broken}"
