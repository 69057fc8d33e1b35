"""`torch`, imported on its first attribute use: modules that read headers and configs (format detection,
`camelid info`, `camelid --help`) import without paying torch's ~1.4 s import until a tensor is needed."""

from __future__ import annotations

import importlib
import types


class LazyModule(types.ModuleType):
    def __init__(self, name: str) -> None:
        super().__init__(name)

    def __getattr__(self, attr: str):
        return getattr(importlib.import_module(self.__name__), attr)


torch = LazyModule("torch")


def lazy_exports(package: str, homes: dict[str, str]):
    """A package's `__getattr__` (PEP 562) that imports each exported name's module on first use:
    `homes` maps name -> submodule."""

    def getattr_(name: str):
        if name in homes:
            return getattr(importlib.import_module(f"{package}.{homes[name]}"), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return getattr_
