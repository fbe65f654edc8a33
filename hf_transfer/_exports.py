"""Lazy public names for a subpackage: ``from hf_transfer.training import apply_strategy`` without importing torch
until the name is used.

A subpackage's ``__init__`` lists its public names with the module that defines each, as *strings*: importing the
package stays instant, and the Space publisher (which follows import statements) does not pull every module of a
subpackage into a Space because one of them is needed.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, homes: Mapping[str, str]) -> tuple[list[str], Callable[[str], Any], Callable[[], list[str]]]:
    """``(__all__, __getattr__, __dir__)`` for ``package`` whose public names live in the modules ``homes`` names."""
    namespace = importlib.import_module(package).__dict__

    def __getattr__(name: str) -> Any:
        if name not in homes:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(homes[name]), name)
        namespace[name] = value  # resolved once; later look-ups skip this function
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(homes))

    return sorted(homes), __getattr__, __dir__
