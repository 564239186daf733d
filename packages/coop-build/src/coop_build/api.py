"""The documented, stable entry points of coop_build, for CI systems and for ``coop``.

Everything a CI job needs to prebuild an environment::

    from coop_build.api import BuildOptions, Builder, default_paths, load_coopfile

    paths = default_paths()
    loaded = load_coopfile(workspace=Path("."))
    result = Builder(paths).build(loaded, Path("."), BuildOptions(push="registry/team/env"))
    print(result.build_key, result.pushed)

Names not listed in ``__all__`` are internal and may change. ``import coop_build.api``
loads pydantic (through the Coopfile models) but nothing that talks to the network;
the registry and export code is imported only when a build pulls or pushes.
"""

from __future__ import annotations

from collections.abc import Mapping

from coop_build.build import Builder, BuildOptions, BuildResult, step_environment
from coop_build.errors import (
    AuthError,
    BuildInterruptedError,
    CoopBuildError,
    CoopfileError,
    DigestMismatchError,
    InvalidReferenceError,
    NamespaceError,
    NotFoundError,
    RegistryError,
    RootfsNotBuiltError,
    StepFailedError,
    StoreError,
    ToolError,
    UnsupportedImageError,
)
from coop_build.layers import LoadedCoopfile, load_coopfile
from coop_build.paths import CoopPaths, coop_home, global_config_path
from coop_build.progress import (
    LayerProgress,
    Message,
    ProgressCallback,
    ProgressEvent,
    StepFinished,
    StepOutput,
    StepStarted,
    ignore_progress,
)
from coop_build.steps import BuildPlan, Step
from coop_build.store import BuildRecord, GcReport, LayerRef, StepRecord, Store, WorkspaceRecord

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


def default_paths(environ: Mapping[str, str] | None = None) -> CoopPaths:
    """The store of ``$COOP_HOME`` (default ``~/.coop``)."""
    return CoopPaths(coop_home(dict(environ) if environ is not None else None))


def push_build(
    paths: CoopPaths,
    store: Store,
    record: BuildRecord,
    ref: str,
    *,
    progress: ProgressCallback = ignore_progress,
) -> str:
    """Push an existing build to ``ref`` (tagged with its build key); returns the reference.

    ``BuildOptions(push=...)`` does the same as part of a build.
    """
    from coop_build.export import push_build as _push_build

    with store.lock():
        return _push_build(paths, store, record, ref, progress=progress)
