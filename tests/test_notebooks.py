"""The notebooks run top to bottom on the shipped micro world, and ship with current outputs.

Their committed outputs come from ``python notebooks/regenerate.py`` (full settings); each code
cell carries a hash of the code that produced them, so a cell edited without regenerating fails
here. CI also runs them with CLIPGUIDE_QUICK=1, the one switch the notebooks read to use fewer
images and steps.
"""

from __future__ import annotations

import ast
import copy
import importlib.util
import warnings
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS_DIR = Path(__file__).resolve().parent.parent / "notebooks"
_spec = importlib.util.spec_from_file_location("regenerate", NOTEBOOKS_DIR / "regenerate.py")
regenerate = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(regenerate)
NOTEBOOKS = regenerate.NOTEBOOKS
MAX_NOTEBOOK_BYTES = 400 * 1024  # pictures are stored as small JPEGs
# Keyword arguments the libraries the notebooks call have deprecated, with their replacement.
DEPRECATED_KEYWORDS = {"torch_dtype": "dtype"}  # diffusers 0.42 (FutureWarning)


def _read(name: str):
    return nbformat.read(NOTEBOOKS_DIR / name, as_version=4)


def _code(nb) -> list:
    return [c for c in nb.cells if c.cell_type == "code"]


def _pictures(nb) -> int:
    mimes = ("image/png", "image/jpeg")
    return sum(
        1 for c in _code(nb) for o in c.outputs if any(m in o.get("data", {}) for m in mimes)
    )


def test_the_notebooks_are_the_three_documented_ones():
    assert sorted(p.name for p in NOTEBOOKS_DIR.glob("*.ipynb")) == NOTEBOOKS


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_outputs_are_current_and_complete(name):
    nb = _read(name)
    nbformat.validate(nb)
    stale = regenerate.stale_cells(nb)
    assert not stale, (
        f"{name}: code cells {stale} changed after their outputs were written (or never ran); "
        f"run: python notebooks/regenerate.py {name}"
    )
    assert nb.metadata.get(regenerate.STAMP, {}).get("settings") == "full", (
        f"{name}: outputs must come from the full settings (regenerate.py without --quick)"
    )
    code = _code(nb)
    assert all(c.execution_count is not None for c in code), f"{name}: some cells did not run"
    kinds = [(o.output_type, o.get("name")) for c in code for o in c.outputs]
    assert ("error", None) not in kinds and ("stream", "stderr") not in kinds, kinds
    assert _pictures(nb) >= 2, f"{name}: its grids and plots are missing"
    size = (NOTEBOOKS_DIR / name).stat().st_size
    assert size <= MAX_NOTEBOOK_BYTES, f"{name}: {size} bytes; keep pictures small"


def test_editing_a_cell_makes_it_and_the_cells_after_it_stale():
    nb = _read(NOTEBOOKS[0])
    regenerate.stamp(nb)  # as regenerate.py leaves it
    assert regenerate.stale_cells(nb) == []
    code = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    edited = copy.deepcopy(nb)
    edited.cells[code[1]].source += "\n# a comment counts: outputs are regenerated"
    assert regenerate.stale_cells(edited) == code[1:]
    moved = copy.deepcopy(nb)
    moved.cells[code[1]], moved.cells[code[2]] = moved.cells[code[2]], moved.cells[code[1]]
    assert regenerate.stale_cells(moved) == code[1:]


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_the_micro_world_and_keeps_real_weights_opt_in(name):
    source = "\n".join(c.source for c in _code(_read(name)))
    assert 'QUICK = os.environ.get("CLIPGUIDE_QUICK") == "1"' in source  # full run by default
    assert "if QUICK" in source  # and uses it
    assert "MICRO_WORLD = True" in source
    assert "RUN_REAL = False" in source
    assert "if RUN_REAL:" in source
    assert "stabilityai/stable-diffusion-xl-base-1.0" in source


def test_the_deprecated_keywords_are_still_deprecated():
    import torch
    from diffusers.utils.deprecation_utils import _resolve_dtype

    with pytest.warns(FutureWarning, match="torch_dtype"):
        assert _resolve_dtype(None, torch.float16) is torch.float16
    assert set(DEPRECATED_KEYWORDS) == {"torch_dtype"}  # the table holds what is checked here


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_no_cell_passes_a_deprecated_keyword(name):
    """The opt-in real-weights cells never run in CI: their calls are checked here."""
    found = []
    for cell in _code(_read(name)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SyntaxWarning)
            tree = ast.parse(cell.source)
        for node in ast.walk(tree):
            if isinstance(node, ast.keyword) and node.arg in DEPRECATED_KEYWORDS:
                found.append(f"{node.arg}= (use {DEPRECATED_KEYWORDS[node.arg]}=) on line "
                             f"{node.lineno}: {ast.get_source_segment(cell.source, node)}")  # fmt: skip
    assert not found, f"{name}: {found}"


def _kernel_name() -> str:
    """The python3 kernel; jupyter_client runs it with this interpreter (sys.executable)."""
    from jupyter_client.kernelspec import KernelSpecManager

    specs = KernelSpecManager().find_kernel_specs()
    assert regenerate.KERNEL in specs, (
        f"no {regenerate.KERNEL!r} Jupyter kernel found (have {sorted(specs)}); install ipykernel "
        "in the environment that runs the tests (pip install -e .[dev])"
    )
    return regenerate.KERNEL


@pytest.mark.slow
def test_deprecated_calls_are_caught_in_the_notebooks_own_code(tmp_path):
    _kernel_name()
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("import warnings\nwarnings.warn('old API', FutureWarning)"),
        nbformat.v4.new_code_cell("warnings.warn('old call', DeprecationWarning)"),
        nbformat.v4.new_code_cell(  # a third party's own internals: not the notebook's doing
            "warnings.warn_explicit('inside', DeprecationWarning, '/lib/other.py', 1, module='other')"
        ),
    ]
    found = regenerate.execute(nb, tmp_path, quick=True)
    assert [f.split(" (")[0] for f in found] == [
        "FutureWarning: old API",
        "DeprecationWarning: old call",
    ]
    assert [c.execution_count for c in nb.cells] == [1, 2, 3]  # the watcher left no trace


@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_executes_top_to_bottom(name, tmp_path):
    _kernel_name()
    nb = _read(name)
    deprecations = regenerate.execute(nb, tmp_path, quick=True)  # raises on a failing cell
    assert not deprecations, f"{name}: deprecated calls: {deprecations}"
    code = _code(nb)
    assert all(c.execution_count is not None for c in code), "some code cells did not run"
    outputs = [o for c in code for o in c.outputs]
    errors = [o for o in outputs if o.output_type == "error"]
    assert not errors, errors
    stderr = [o.text for o in outputs if o.output_type == "stream" and o.name == "stderr"]
    assert not stderr, f"{name} wrote to stderr (warnings it does not explain?): {stderr}"
    assert _pictures(nb) >= 2, f"{name}: expected its grids and plots"
