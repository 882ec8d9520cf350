"""Keeps the API and scheduler processes light when the worker extras are installed too.

Pulser imports torch whenever it is installed (1.1 s, ~180 MB) and matplotlib at import
time (for drawing). The API and scheduler never draw and never compute with torch, so
before anything imports Pulser they hide torch (Pulser then takes its numpy path, as in
an install without torch) and stand in an inert module for matplotlib: any attribute is a
harmless placeholder, and drawing is simply never called. Workers do not call this.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import types
from typing import Any

_HIDDEN = ("torch",)
_STUBBED = ("matplotlib", "mpl_toolkits")
_BLOCKED = ("emu_mps", "emu_sv", "emu_base", "pulser_simulation", "qutip")


class _Placeholder:
    """Stands for any matplotlib object; using it for real would be a bug, never reached."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, name: str) -> _Placeholder:
        return _Placeholder(f"{self._name}.{name}")

    def __call__(self, *args: Any, **kwargs: Any) -> _Placeholder:
        return _Placeholder(f"{self._name}()")

    def __getitem__(self, key: Any) -> _Placeholder:
        return _Placeholder(f"{self._name}[]")

    def __mro_entries__(self, bases: tuple[Any, ...]) -> tuple[type, ...]:
        return (object,)


class _StubModule(types.ModuleType):
    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return _Placeholder(f"{self.__name__}.{name}")


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        root = name.partition(".")[0]
        if root in _STUBBED:
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        if root in _BLOCKED:
            raise ImportError(f"{name} is not imported in the API and scheduler processes")
        return None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        module = _StubModule(spec.name)
        module.__path__ = []
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        pass


def keep_light() -> None:
    """Hide torch, stub matplotlib and refuse the emulators in this process (idempotent)."""
    heavy = [m for m in (*_HIDDEN, *_STUBBED) if isinstance(sys.modules.get(m), types.ModuleType)]
    if any(not isinstance(sys.modules[m], _StubModule) for m in heavy):
        raise RuntimeError(f"keep_light() must run before {heavy} are imported")
    if any(isinstance(f, _Finder) for f in sys.meta_path):
        return
    for name in _HIDDEN:
        sys.modules[name] = None  # type: ignore[assignment]  # "import torch" raises ImportError
    sys.meta_path.insert(0, _Finder())
