"""Names a package exports but imports only on first use (PEP 562 module ``__getattr__``).

So ``import hpo`` or ``import hpo.config`` does not load torch, and commands that train nothing
(``hpo report``, ``--help``...) start fast. Optuna does the same with its ``_LazyImport``.

    >>> import sys, types
    >>> pkg = types.ModuleType("pkg")
    >>> sys.modules["pkg"] = pkg
    >>> pkg.__getattr__, pkg.__dir__ = lazy_exports("pkg", {"sqrt": "math"})
    >>> pkg.sqrt(9.0), "sqrt" in dir(pkg)
    (3.0, True)
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any


def lazy_exports(package: str, names: dict[str, str]
                 ) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package``: each name in ``names`` is imported from
    its module (the value) when first used, then kept in the package's namespace."""

    def __getattr__(name: str) -> Any:
        if name not in names:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(names[name]), name)
        setattr(sys.modules[package], name, value)  # later look-ups skip this function
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(names))

    return __getattr__, __dir__
