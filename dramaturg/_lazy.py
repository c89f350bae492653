"""Package attributes that load on first use (PEP 562), so importing a package stays cheap.

``dramaturg --help`` imports the package roots; loading their whole public API (DuckDB,
autogen, the SDKs, the web stack) would cost seconds before a line of help is printed.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str, namespace: MutableMapping[str, Any], names_by_module: Mapping[str, tuple[str, ...]]
) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """A package's ``__getattr__`` and ``__dir__`` for names imported on first use.

    Args:
        package: the package's ``__name__``, for the AttributeError.
        namespace: the package's ``globals()``: a loaded name is kept there, so the next
            lookup finds it without coming back here.
        names_by_module: which module each public name comes from.

    Example:
        >>> # in a package's __init__.py:
        >>> # __getattr__, __dir__ = lazy_exports(__name__, globals(), {"pkg._impl": ("Thing",)})
    """
    module_of = {name: module for module, names in names_by_module.items() for name in names}

    def __getattr__(name: str) -> object:
        module = module_of.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *namespace.get("__all__", ())})

    return __getattr__, __dir__
