"""Files that ship inside PyPI packages (models, benchmark data), found without importing the package."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from camelid.errors import InputError


def package_file(module: str, relative: str, requirement: str) -> Path:
    """`relative` inside the installed package `module`; the error says which requirement to install."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise InputError(
            f"this needs the PyPI package {requirement}: `pip install --no-deps {requirement}` (make setup installs it)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / relative
