"""coop_build: build rootfs environments from a declarative ``coop.toml``.

A pure library: it knows nothing of sessions or daemons. CI systems import it directly
to prebuild environments and push them to an OCI registry.

Public API (stable)::

    from coop_build import load_coopfile, Builder, BuildOptions, Store

``coop_build.api`` lists the API once, in its imports and its ``__all__``; this package
offers the same names lazily (PEP 562), so ``import coop_build`` stays cheap and each
name loads only its own module. To know where a name lives without importing ``api`` (and
pydantic with it), the package reads ``api.py``'s import statements from its source.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from coop_build.api import *  # noqa: F403  (the names, for type checkers)
    from coop_build.api import __all__ as __all__

_homes: dict[str, tuple[str, str]] | None = None


def _api_homes() -> dict[str, tuple[str, str]]:
    """Each name of ``api.__all__`` -> (module that defines it, its name there)."""
    global _homes  # noqa: PLW0603  (computed once, on the first name asked for)
    if _homes is None:
        import ast
        from pathlib import Path

        tree = ast.parse(Path(__file__).with_name("api.py").read_bytes())
        origin: dict[str, tuple[str, str]] = {}
        names: list[str] = []
        for node in tree.body:
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:
                    origin[alias.asname or alias.name] = (node.module, alias.name)
            elif isinstance(node, ast.Assign) and [
                t.id for t in node.targets if isinstance(t, ast.Name)
            ] == ["__all__"]:
                names = list(ast.literal_eval(node.value))
        _homes = {name: origin.get(name, ("coop_build.api", name)) for name in names}
    return _homes


def __getattr__(name: str) -> Any:
    if name == "__all__":
        value: Any = list(_api_homes())
    else:
        home = _api_homes().get(name)
        if home is None:
            raise AttributeError(f"module 'coop_build' has no attribute {name!r}")
        value = getattr(importlib.import_module(home[0]), home[1])
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_api_homes()})
