"""Lazy package namespaces (PEP 562): a package names each public object and the submodule that
defines it, and the submodule is imported the first time one of its names is read, so that
``import clipguide`` and ``clipguide --help`` load no torch, diffusers, transformers or
open_clip. Submodules that the packages used to import eagerly still resolve as attributes
(``clipguide.model.openclip``).
"""

from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["lazy_package"]


class _LazyPackage(types.ModuleType):
    """A package whose exported names are imported from their submodule on first access."""

    def __getattr__(self, name: str) -> Any:
        where = vars(self)["_lazy_exports"].get(name)
        if where is not None:
            value = getattr(importlib.import_module(where), name)
            vars(self)[name] = value  # later reads are plain attribute reads
            return value
        if not name.startswith("_"):
            try:
                return importlib.import_module(f"{self.__name__}.{name}")
            except ModuleNotFoundError as err:
                if err.name != f"{self.__name__}.{name}":
                    raise
        raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | set(vars(self)["_lazy_exports"]))

    def __setattr__(self, name: str, value: Any) -> None:
        # Importing a submodule binds it on its package; where a public name is spelt like its
        # submodule (``scoring.best_of_n``, ``shapes.render``), the public object keeps the
        # name, as it did when the package imported it eagerly.
        if isinstance(value, types.ModuleType) and name in vars(self)["_lazy_exports"]:
            if value.__name__ == f"{self.__name__}.{name}":
                return
        super().__setattr__(name, value)


def lazy_package(name: str, exports: Mapping[str, Iterable[str]]) -> None:
    """Make package ``name`` import each of ``exports`` (submodule -> names) when first read."""
    module = sys.modules[name]
    table = {attr: where for where, attrs in exports.items() for attr in attrs}
    vars(module)["_lazy_exports"] = table
    for attr in table:  # a submodule bound before now under a public name gives the name back
        if isinstance(vars(module).get(attr), types.ModuleType):
            del vars(module)[attr]
    module.__class__ = _LazyPackage
