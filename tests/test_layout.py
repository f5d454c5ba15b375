"""The layout's rules, checked on the source: no import cycle in clipguide; the library never
imports its test fixtures; the micro world is reached only through the sources entry point."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "clipguide"


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imported(name: str, path: Path, known: set[str]) -> set[str]:
    """clipguide modules that ``name`` imports, anywhere in the file (function bodies too)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # "from pkg import sub" imports the submodule when there is one
            targets = [
                f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names
            ]
        else:
            continue
        found.update(t for t in targets if t in known and t != name)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imported(name, path, known) for name, path in modules.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (as a list of modules), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_the_import_graph_is_read_from_the_source():
    graph = _graph()
    assert "clipguide.model.sources" in graph["clipguide.model"]
    assert "clipguide.model.registry" in graph["clipguide.model.sources"]
    # function-level imports count too
    assert "clipguide.model.images" in graph["clipguide.model.clip"]


def test_no_import_cycle():
    assert _cycle(_graph()) is None
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]  # it can fail


def test_no_library_module_imports_the_test_fixtures():
    graph = _graph()
    users = sorted(m for m, deps in graph.items() if "clipguide.testing" in deps)
    assert users == []


def test_only_the_micro_world_imports_the_micro_world():
    graph = _graph()
    users = sorted(
        m
        for m, deps in graph.items()
        if not (m == "clipguide.shapes" or m.startswith("clipguide.shapes."))
        and any(d == "clipguide.shapes" or d.startswith("clipguide.shapes.") for d in deps)
    )
    assert users == []


def test_the_micro_world_is_declared_as_a_sources_plugin():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    points = project["entry-points"]["clipguide.sources"]
    assert points == {"shapes": "clipguide.shapes.registry:register"}


def test_load_clip_finds_the_micro_world_through_the_entry_point():
    """In a fresh interpreter: the name resolves without importing clipguide.shapes first, and
    only the registry's plugin loading imports it."""
    code = (
        "import sys, clipguide\n"
        "assert 'clipguide.shapes' not in sys.modules\n"
        "clip = clipguide.load_clip('shapes', towers=('text',))\n"
        "assert clip.name == 'shapes' and 'clipguide.shapes.registry' in sys.modules\n"
        "print('ok')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_the_public_surface_is_a_dozen_names():
    import clipguide

    assert clipguide.__all__ == [
        "__version__",
        "load_clip",
        "CLIP",
        "load_image",
        "encode_prompt",
        "Conditioning",
        "Region",
        "RegionalPrompt",
        "CLIPGuidance",
        "GuidanceSettings",
        "CLIPScorer",
        "Ranking",
        "best_of_n",
        "BestOfN",
        "contact_sheet",
    ]
    assert all(hasattr(clipguide, name) for name in clipguide.__all__)
    # everything else from its module; each of those names its own public names
    for package in ("model", "conditioning", "guidance", "scoring", "cli", "shapes"):
        module = importlib.import_module(f"clipguide.{package}")
        assert module.__all__ and all(hasattr(module, n) for n in module.__all__), package


def test_every_module_declares_its_public_names():
    missing = [m for m, p in _modules().items() if "__all__" not in p.read_text(encoding="utf-8")]
    assert missing == ["clipguide.__main__", "clipguide.shapes.training.__main__"]
