"""What the sandbox, escape and supervisor tests share: a workspace in the test's HOME and
a sandbox configuration on the static-busybox layer."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from coop_build.paths import CoopPaths
from coop_run.errors import SandboxError
from coop_run.sandbox.config import SandboxConfig
from coop_run.sandbox.host import Sandbox
from support.bench import CoopEnv


def home_workspace(env: CoopEnv) -> Path:
    """``~/proj`` in the test's own HOME: a workspace as a person has one."""
    path = env.home / "proj"
    path.mkdir(parents=True)
    return path


def busybox_config(env: CoopEnv, layer: Path, workspace: Path, name: str, /,
                   **changes: Any) -> SandboxConfig:
    """A sandbox of ``layer`` alone, persisting ``.cache``, its session dir in COOP_HOME.

    Positional-only: ``changes`` may hold any field, ``env`` and ``name`` too.
    """
    base: dict[str, Any] = {
        "name": name,
        "layers": [layer],
        "session_dir": CoopPaths(env.coop_home).sessions / name,
        "workspace": workspace,
        "persist": [".cache"],
        "user_home": env.home,
    }
    base.update(changes)
    return SandboxConfig(**base)


@contextlib.contextmanager
def running_sandbox(config: SandboxConfig) -> Iterator[Sandbox]:
    """A started sandbox of ``config``, killed at the end (a fixture's body)."""
    box = Sandbox(config)
    box.start()
    try:
        yield box
    finally:
        with contextlib.suppress(SandboxError):
            box.stop(force=True)
