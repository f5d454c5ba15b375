"""The notebooks run top to bottom on the shipped micro world, and are committed without outputs.

CI runs them with CLIPGUIDE_QUICK=1, the one switch the notebooks read to use fewer images and
steps (a human running them gets the full settings).
"""

from __future__ import annotations

import time
from pathlib import Path

import nbclient  # dev extras: pip install -e .[dev]
import nbformat
import pytest

NOTEBOOKS_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = ["01_conditioning.ipynb", "02_clip_guided_sampling.ipynb", "03_reranking.ipynb"]
KERNEL = "python3"
CELL_TIMEOUT_S = 600


def _read(name: str):
    return nbformat.read(NOTEBOOKS_DIR / name, as_version=4)


def test_the_notebooks_are_the_three_documented_ones():
    assert sorted(p.name for p in NOTEBOOKS_DIR.glob("*.ipynb")) == NOTEBOOKS


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_is_committed_without_outputs(name):
    nb = _read(name)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, f"{name} has no code cells"
    dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and c.outputs]
    counted = [
        i for i, c in enumerate(nb.cells) if c.cell_type == "code" and c.execution_count is not None
    ]
    assert not dirty, f"{name}: cells {dirty} have outputs; strip them before committing"
    assert not counted, f"{name}: cells {counted} have execution counts; strip them"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_the_micro_world_and_keeps_real_weights_opt_in(name):
    source = "\n".join(c.source for c in _read(name).cells if c.cell_type == "code")
    assert 'QUICK = os.environ.get("CLIPGUIDE_QUICK") == "1"' in source  # full run by default
    assert "if QUICK" in source  # and uses it
    assert "MICRO_WORLD = True" in source
    assert "RUN_REAL = False" in source
    assert "if RUN_REAL:" in source
    assert "stabilityai/stable-diffusion-xl-base-1.0" in source


def _kernel_name() -> str:
    """The python3 kernel; jupyter_client runs it with this interpreter (sys.executable)."""
    from jupyter_client.kernelspec import KernelSpecManager

    specs = KernelSpecManager().find_kernel_specs()
    assert KERNEL in specs, (
        f"no {KERNEL!r} Jupyter kernel found (have {sorted(specs)}); install ipykernel in the "
        "environment that runs the tests (pip install -e .[dev])"
    )
    return KERNEL


@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_executes_top_to_bottom(name, tmp_path, monkeypatch):
    nb = _read(name)
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.setenv(var, "1")  # the kernel inherits this process's environment
    monkeypatch.setenv("CLIPGUIDE_QUICK", "1")  # the notebooks' smaller settings, for CI
    client = nbclient.NotebookClient(
        nb,
        timeout=CELL_TIMEOUT_S,
        kernel_name=_kernel_name(),
        resources={"metadata": {"path": str(tmp_path)}},  # run where it may write files
    )
    start = time.perf_counter()
    client.execute()  # raises CellExecutionError naming the first failing cell
    seconds = time.perf_counter() - start
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in code), "some code cells did not run"
    errors = [o for c in code for o in c.outputs if o.output_type == "error"]
    assert not errors, errors
    figures = [o for c in code for o in c.outputs if "image/png" in o.get("data", {})]
    assert len(figures) >= 2, (
        f"{name} produced {len(figures)} figures; expected its grids and plots"
    )
    print(f"{name}: {seconds:.1f} s")
