"""Run the notebooks with their full settings on the micro world and commit-ready outputs.

    python notebooks/regenerate.py                      # all three (CPU: several minutes)
    python notebooks/regenerate.py 03_reranking.ipynb   # one

Each notebook is executed top to bottom in a fresh kernel (offline, without CLIPGUIDE_QUICK),
its pictures are stored as small JPEGs, and every code cell is stamped with a hash of its own
source and of every code cell before it (``metadata.clipguide.code_sha256``), so that
``tests/test_notebooks.py`` can tell when a cell changed but its outputs were not regenerated.
Execution also fails on any FutureWarning or DeprecationWarning that the notebooks' own calls
raise, and on anything written to stderr (it would be committed with the outputs).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import os
import sys
import tempfile
from pathlib import Path

__all__ = [
    "NOTEBOOKS",
    "NOTEBOOKS_DIR",
    "STAMP",
    "code_hashes",
    "compact_images",
    "execute",
    "regenerate",
    "stale_cells",
    "stamp",
]

NOTEBOOKS_DIR = Path(__file__).resolve().parent
NOTEBOOKS = ["01_conditioning.ipynb", "02_clip_guided_sampling.ipynb", "03_reranking.ipynb"]
STAMP = "clipguide"  # the code cells' metadata key
KERNEL = "python3"
CELL_TIMEOUT_S = 1800
MAX_SIDE = 900  # pictures larger than this (pixels) are scaled down
JPEG_QUALITY = 85

# Run before the notebook (then removed), to catch deprecated calls. As Python's own defaults
# intend: a FutureWarning (meant for end users) counts when
# a notebook cell is on its call stack; a DeprecationWarning (meant for developers) when it is
# attributed to a notebook cell or to clipguide, not to a third party's own internals.
_WATCH = """
import importlib.util as _util, inspect as _inspect, traceback as _traceback, warnings as _warnings
_HERE = _inspect.currentframe().f_code.co_filename
_CELLS = _HERE.rsplit("/", 1)[0] + "/"
_OURS = (_CELLS, _util.find_spec("clipguide").submodule_search_locations[0] + "/")
_DEPRECATIONS = []
_shown = _warnings.showwarning


def _watch(message, category, filename, lineno, file=None, line=None):
    stack = _traceback.extract_stack()[:-1]
    cells = [f for f in stack if f.filename.startswith(_CELLS) and f.filename != _HERE]
    if cells and (
        issubclass(category, FutureWarning)
        or issubclass(category, DeprecationWarning) and str(filename).startswith(_OURS)
    ):
        _DEPRECATIONS.append(f"{category.__name__}: {message} (cell line {cells[-1].lineno}: "
                             f"{cells[-1].line.strip()})")
    _shown(message, category, filename, lineno, file, line)


_warnings.showwarning = _watch
for _module in ("__main__", "clipguide"):  # others' internals keep their filters (and silence)
    _warnings.filterwarnings("always", category=DeprecationWarning, module=_module)
"""
_REPORT = "import json as _json\nprint(_json.dumps(_DEPRECATIONS))"


def code_hashes(nb) -> list[str]:
    """Per code cell: sha256 of its source and of every code cell before it, in order."""
    digest = hashlib.sha256()
    hashes = []
    for cell in nb.cells:
        if cell.cell_type == "code":
            source = cell.source.encode()
            digest.update(len(source).to_bytes(8, "little") + source)
            hashes.append(digest.copy().hexdigest())
    return hashes


def stamp(nb) -> None:
    """Record each code cell's hash next to the outputs it now holds."""
    code = [c for c in nb.cells if c.cell_type == "code"]
    for cell, digest in zip(code, code_hashes(nb), strict=True):
        cell.metadata[STAMP] = {"code_sha256": digest}


def stale_cells(nb) -> list[int]:
    """Indices (among all cells) of code cells whose outputs predate their code."""
    code = [(i, c) for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    return [
        i
        for (i, cell), digest in zip(code, code_hashes(nb), strict=True)
        if cell.metadata.get(STAMP, {}).get("code_sha256") != digest
    ]


def compact_images(nb) -> None:
    """Store every picture as a JPEG of at most MAX_SIDE pixels a side (PNGs are large)."""
    from PIL import Image

    for cell in nb.cells:
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if "image/png" not in data:
                continue
            image = Image.open(io.BytesIO(base64.b64decode(data["image/png"]))).convert("RGB")
            image.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
            buffer = io.BytesIO()
            image.save(buffer, format="JPEG", quality=JPEG_QUALITY, optimize=True)
            del data["image/png"]
            data["image/jpeg"] = base64.b64encode(buffer.getvalue()).decode()
            output.setdefault("metadata", {}).pop("image/png", None)


def execute(nb, workdir: str | os.PathLike, *, quick: bool) -> list[str]:
    """Run ``nb`` in place in a fresh kernel (offline; CLIPGUIDE_QUICK as asked) from
    ``workdir``; returns the deprecation warnings its own calls raised."""
    import nbclient
    import nbformat

    saved = {
        k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "CLIPGUIDE_QUICK")
    }
    os.environ.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    if quick:
        os.environ["CLIPGUIDE_QUICK"] = "1"
    else:
        os.environ.pop("CLIPGUIDE_QUICK", None)
    nb.cells.insert(0, nbformat.v4.new_code_cell(_WATCH))
    nb.cells.append(nbformat.v4.new_code_cell(_REPORT))
    try:  # the kernel inherits this process's environment
        client = nbclient.NotebookClient(
            nb, timeout=CELL_TIMEOUT_S, kernel_name=KERNEL, record_timing=False,
            resources={"metadata": {"path": str(workdir)}},
        )  # fmt: skip
        client.execute()  # raises CellExecutionError naming the first failing cell
        report = "".join(o.get("text", "") for o in nb.cells[-1].outputs)
    finally:
        del nb.cells[0], nb.cells[-1]
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    count = 0
    for cell in nb.cells:  # numbered as if the watcher had not run
        if cell.cell_type == "code" and cell.execution_count is not None:
            count += 1
            cell.execution_count = count
            for output in cell.outputs:
                if "execution_count" in output:
                    output["execution_count"] = count
    return json.loads(report.strip().splitlines()[-1])


def regenerate(name: str, *, quick: bool = False) -> Path:
    """Execute one notebook with its full settings and write it back, stamped and compact."""
    import nbformat

    path = NOTEBOOKS_DIR / name
    nb = nbformat.read(path, as_version=4)
    with tempfile.TemporaryDirectory() as workdir:
        deprecations = execute(nb, workdir, quick=quick)
    if deprecations:
        raise SystemExit(f"{name}: deprecated calls, fix them first: {deprecations}")
    stderr = [o.text for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "stream" and o.name == "stderr"]  # fmt: skip
    if stderr:
        raise SystemExit(f"{name}: cells wrote to stderr, which would be committed: {stderr}")
    compact_images(nb)
    stamp(nb)
    nb.metadata[STAMP] = {"settings": "quick" if quick else "full"}
    nbformat.validate(nb)
    nbformat.write(nb, path)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "names",
        nargs="*",
        metavar="NOTEBOOK",
        help=f"notebooks to regenerate (default: all of {', '.join(NOTEBOOKS)})",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="CLIPGUIDE_QUICK=1 settings, to try the command (not for committing)",
    )
    args = parser.parse_args(argv)
    unknown = [name for name in args.names if name not in NOTEBOOKS]
    if unknown:
        parser.error(f"unknown notebook {unknown[0]!r}; accepted: {', '.join(NOTEBOOKS)}")
    for name in args.names or NOTEBOOKS:
        print(f"{name} ...", end=" ", flush=True)
        print(regenerate(name, quick=args.quick).stat().st_size // 1024, "KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
