"""coop_build: build rootfs environments from a declarative ``coop.toml``.

A pure library: it knows nothing of sessions or daemons. CI systems import it directly
to prebuild environments and push them to an OCI registry.

Public API (stable)::

    from coop_build import load_coopfile, Builder, BuildOptions, Store

See ``coop_build.api`` for the documented entry points. The names are resolved lazily
(PEP 562), so ``import coop_build`` stays cheap and each name loads only its own module.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from coop_build.api import (
        AuthError,
        Builder,
        BuildInterruptedError,
        BuildOptions,
        BuildPlan,
        BuildRecord,
        BuildResult,
        CoopBuildError,
        CoopfileError,
        CoopPaths,
        DigestMismatchError,
        GcReport,
        InvalidReferenceError,
        LayerProgress,
        LayerRef,
        LoadedCoopfile,
        Message,
        NamespaceError,
        NotFoundError,
        ProgressCallback,
        ProgressEvent,
        RegistryError,
        RootfsNotBuiltError,
        Step,
        StepFailedError,
        StepFinished,
        StepOutput,
        StepRecord,
        StepStarted,
        Store,
        StoreError,
        ToolError,
        UnsupportedImageError,
        WorkspaceRecord,
        coop_home,
        default_paths,
        global_config_path,
        ignore_progress,
        load_coopfile,
        push_build,
        step_environment,
    )

_ERRORS = (
    "AuthError",
    "BuildInterruptedError",
    "CoopBuildError",
    "CoopfileError",
    "DigestMismatchError",
    "InvalidReferenceError",
    "NamespaceError",
    "NotFoundError",
    "RegistryError",
    "RootfsNotBuiltError",
    "StepFailedError",
    "StoreError",
    "ToolError",
    "UnsupportedImageError",
)
_PROGRESS = (
    "LayerProgress",
    "Message",
    "ProgressCallback",
    "ProgressEvent",
    "StepFinished",
    "StepOutput",
    "StepStarted",
    "ignore_progress",
)
_HOMES: dict[str, str] = {
    **dict.fromkeys(_ERRORS, "coop_build.errors"),
    **dict.fromkeys(_PROGRESS, "coop_build.progress"),
    **dict.fromkeys(("CoopPaths", "coop_home", "global_config_path"), "coop_build.paths"),
    **dict.fromkeys(("LoadedCoopfile", "load_coopfile"), "coop_build.layers"),
    **dict.fromkeys(
        ("BuildOptions", "BuildResult", "Builder", "step_environment"), "coop_build.build"
    ),
    **dict.fromkeys(("BuildPlan", "Step"), "coop_build.steps"),
    **dict.fromkeys(
        ("BuildRecord", "GcReport", "LayerRef", "StepRecord", "Store", "WorkspaceRecord"),
        "coop_build.store",
    ),
    **dict.fromkeys(("default_paths", "push_build"), "coop_build.api"),
}

__all__ = [
    "AuthError",
    "BuildInterruptedError",
    "BuildOptions",
    "BuildPlan",
    "BuildRecord",
    "BuildResult",
    "Builder",
    "CoopBuildError",
    "CoopPaths",
    "CoopfileError",
    "DigestMismatchError",
    "GcReport",
    "InvalidReferenceError",
    "LayerProgress",
    "LayerRef",
    "LoadedCoopfile",
    "Message",
    "NamespaceError",
    "NotFoundError",
    "ProgressCallback",
    "ProgressEvent",
    "RegistryError",
    "RootfsNotBuiltError",
    "Step",
    "StepFailedError",
    "StepFinished",
    "StepOutput",
    "StepRecord",
    "StepStarted",
    "Store",
    "StoreError",
    "ToolError",
    "UnsupportedImageError",
    "WorkspaceRecord",
    "coop_home",
    "default_paths",
    "global_config_path",
    "ignore_progress",
    "load_coopfile",
    "push_build",
    "step_environment",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'coop_build' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_HOMES])
