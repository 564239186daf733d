"""Fixtures running the real ``coop`` script, isolated by the autouse ``coop_env`` fixture."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
from coop_cli import COOP, RUN_TIMEOUT, Result, RunCoop, coop_environ

from support.rootfs import make_busybox_rootfs


@pytest.fixture(scope="session")
def busybox_layer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One static-busybox layer for every sandbox and supervisor test (read-only there)."""
    return make_busybox_rootfs(tmp_path_factory.mktemp("busybox") / "layer")


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """An empty workspace directory for the test's Coopfile."""
    path = tmp_path / "ws"
    path.mkdir()
    path.chmod(0o755)
    return path


@pytest.fixture
def run_coop(coop_env: Any, workspace: Path) -> RunCoop:
    """Run ``coop ARGS`` in the workspace; returns exit code and decoded output."""
    assert COOP.exists(), f"{COOP} missing: run uv sync"

    def run(*args: str, cwd: Path | None = None, timeout: float = RUN_TIMEOUT) -> Result:
        proc = subprocess.run(
            [str(COOP), *args],
            cwd=cwd or workspace,
            env=coop_environ(coop_env),
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        return Result(proc.returncode, proc.stdout, proc.stderr)

    return run
