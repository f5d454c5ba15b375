"""Start-up: ``import clipguide`` and every ``--help`` load no heavy library, each command loads
only what it uses, and the lazy namespaces still give every public name (the same objects).

What a command imported is read from ``sys.modules`` at the end of a run in a fresh interpreter
(the wrapper :data:`PROBE`), never from timings (benchmarks/startup.py measures those)."""

from __future__ import annotations

import ast
import csv
import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "diffusers", "transformers", "open_clip", "ray")
PACKAGES = (
    "clipguide",
    "clipguide.model",
    "clipguide.conditioning",
    "clipguide.guidance",
    "clipguide.scoring",
    "clipguide.scoring.captions",
    "clipguide.distributed",
    "clipguide.shapes",
)
# Runs ``clipguide ARGS`` as ``python -m clipguide`` does, then prints the exit status and the
# top-level packages it left in sys.modules as the last line (JSON).
PROBE = """
import json, runpy, sys
code = 0
sys.argv = ["clipguide", *sys.argv[1:]]
try:
    runpy.run_module("clipguide", run_name="__main__", alter_sys=True)
except SystemExit as done:
    code = done.code or 0
print(json.dumps({"rc": code, "modules": sorted({m.split(".")[0] for m in sys.modules})}))
"""


def _fresh(code: str, *args: str) -> dict:
    """Run ``code`` in a fresh interpreter; its last stdout line, read as JSON."""
    done = subprocess.run(
        [sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _command(*args: str) -> dict:
    return _fresh(PROBE, *args)


def test_import_clipguide_loads_no_heavy_library():
    found = _fresh(
        "import json, sys, clipguide\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    assert [m for m in HEAVY if m in found] == []
    assert "numpy" not in found


@pytest.mark.parametrize("command", [[], ["score"], ["generate"], ["rerank"]])
def test_help_loads_no_heavy_library(command):
    run = _command(*command, "--help")
    assert run["rc"] == 0
    assert [m for m in HEAVY if m in run["modules"]] == []


def test_the_micro_world_registers_without_torch():
    """The entry point still registers ``--model shapes`` lazily (on a miss), and it is cheap:
    registering imports no torch; loading the model does."""
    found = _fresh(
        "import json, sys\n"
        "from clipguide.cli.models import named_model\n"
        "before = 'clipguide.shapes' in sys.modules\n"
        "model = named_model('shapes')\n"
        "print(json.dumps([before, model.guide_clip, sorted(sys.modules)]))"
    )
    before, guide, modules = found
    assert before is False and guide == "shapes"
    assert [m for m in HEAVY if m in modules] == []


@pytest.fixture(scope="module")
def micro_images(tmp_path_factory) -> Path:
    from clipguide.shapes import render, sample_scene

    folder = tmp_path_factory.mktemp("micro")
    for seed in range(3):
        render(sample_scene(seed)).save(folder / f"scene-{seed}.png")
    return folder


def test_score_never_imports_diffusers(micro_images, tmp_path):
    out = tmp_path / "scores.csv"
    run = _command(
        "score", str(micro_images), "--prompt", "a red circle", "--model", "shapes",
        "--no-progress", "--out", str(out),
    )  # fmt: skip
    assert run["rc"] == 0
    with out.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 3 and all(row["error"] == "" for row in rows)
    assert "torch" in run["modules"]  # it did score
    # the micro world's CLIP is a folder: no open_clip (and its timm) to read it
    assert [m for m in ("diffusers", "ray", "open_clip") if m in run["modules"]] == []


def test_rerank_never_imports_diffusers(micro_images, tmp_path):
    sheet = tmp_path / "sheet.png"
    run = _command(
        "rerank", str(micro_images), "--prompt", "a red circle", "--model", "shapes",
        "--sheet", str(sheet),
    )  # fmt: skip
    assert run["rc"] == 0 and sheet.is_file()
    assert [m for m in ("diffusers", "ray") if m in run["modules"]] == []


def _declared(package: str) -> dict[str, str]:
    """name -> defining module, from the package's own import statements (the eager ones and
    those under ``if TYPE_CHECKING:``)."""
    module = importlib.import_module(package)
    path = Path(module.__file__)
    found = {}
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module not in ("__future__", "typing"):
            base = node.module if not node.level else f"{package}.{node.module}"
            for alias in node.names:
                found[alias.asname or alias.name] = base
    return found


@pytest.mark.parametrize("package", PACKAGES)
def test_every_public_name_resolves_to_the_same_object(package):
    module = importlib.import_module(package)
    declared = _declared(package)
    assert module.__all__, package
    for name in module.__all__:
        value = getattr(module, name)
        if name in declared and declared[name] != "clipguide._lazy":
            origin = importlib.import_module(declared[name])
            assert value is getattr(origin, name), f"{package}.{name}"
        assert name in dir(module), f"{package}.{name} missing from dir()"
    namespace: dict = {}
    exec(f"from {package} import *", namespace)
    assert set(module.__all__) <= set(namespace)


def test_every_public_name_resolves_in_a_fresh_interpreter():
    """Names read before their module is imported, and after, from every package."""
    found = _fresh(
        "import importlib, json, types\n"
        f"packages = {list(PACKAGES)!r}\n"
        "bad = []\n"
        "for package in packages:\n"
        "    module = importlib.import_module(package)\n"
        "    for name in module.__all__:\n"
        "        if isinstance(getattr(module, name), types.ModuleType):\n"
        "            bad.append(f'{package}.{name}')\n"
        "print(json.dumps(bad))"
    )
    assert found == []


@pytest.mark.parametrize(
    ("package", "name"),
    [
        ("clipguide.scoring", "best_of_n"),
        ("clipguide.shapes", "render"),
        ("clipguide.scoring.captions", "relations"),
    ],
)
def test_a_public_name_spelt_like_its_submodule_stays_the_public_object(package, name):
    """Importing the submodule first (``from clipguide.scoring.best_of_n import BestOfN``) binds
    the module on the package; the package's public name must still be the function."""
    found = _fresh(
        "import importlib, json, types\n"
        f"importlib.import_module('{package}.{name}')\n"
        f"package = importlib.import_module('{package}')\n"
        f"value = getattr(package, '{name}')\n"
        "print(json.dumps([isinstance(value, types.ModuleType), callable(value)]))"
    )
    assert found == [False, True]


def test_submodules_still_resolve_as_attributes():
    """Modules the packages used to import eagerly are still reachable as attributes."""
    import clipguide

    assert clipguide.model.openclip.DEFAULT_MODEL == "ViT-bigG-14"
    assert clipguide.scoring.methods.METHODS[0] == "clipscore"
    with pytest.raises(AttributeError, match="no_such_thing"):
        clipguide.model.no_such_thing  # noqa: B018


def test_a_third_party_kind_is_still_asked_after_the_built_ins():
    """Registering a kind through ``clipguide.model`` before any load keeps the built-in
    resolvers first, as when the package imported them eagerly."""
    found = _fresh(
        "import json\n"
        "from clipguide.model import Resolver, register_resolver\n"
        "register_resolver(Resolver('mine', lambda s: False, lambda s, r: None))\n"
        "from clipguide.model.registry import kinds\n"
        "print(json.dumps(kinds()))"
    )
    assert found[-1] == "mine" and len(found) > 3


def test_the_ray_driver_reads_a_registered_models_preprocessing_without_open_clip():
    """The Ray engine's driver asks for the judge's preprocessing before Ray starts; for a
    registered name (which load_clip asks before open_clip names) open_clip is not imported."""
    found = _fresh(
        "import json, sys\n"
        "from clipguide.distributed.ray_score import preprocess_for\n"
        "pre = preprocess_for('shapes', None)\n"
        "print(json.dumps([pre.image_size, 'open_clip' in sys.modules, 'diffusers' in sys.modules]))"
    )
    assert found == [64, False, False]


def test_a_ray_worker_imports_only_what_it_uses():
    """A decoding task unpickles ``decode_batch`` (importing ``ray_score``): no model libraries;
    a model actor builds ``ImageScorer``: torch and transformers, no diffusers nor open_clip."""
    found = _fresh(
        "import json, sys\n"
        "import clipguide.distributed.ray_score as rs\n"
        "decode = sorted({m.split('.')[0] for m in sys.modules})\n"
        "pre = rs.preprocess_for('shapes', None)\n"
        "rs.ImageScorer('shapes', None, None, 100.0, pre)\n"
        "actor = sorted({m.split('.')[0] for m in sys.modules})\n"
        "print(json.dumps([decode, actor]))"
    )
    decode, actor = found
    assert [m for m in ("transformers", "diffusers", "open_clip", "ray") if m in decode] == []
    assert "transformers" in actor  # it did load the judge
    assert [m for m in ("diffusers", "open_clip") if m in actor] == []
