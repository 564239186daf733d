"""Session fixtures: the real ``coop`` CLI, daemon and supervisors; all stopped by PID.

``stop_everything`` (autouse) stops, at the end of each test, every process started with
this test's ``COOP_HOME`` (daemons, and supervisors: forked from a daemon, they keep its
environment) plus the pids in ``daemon.pid`` and ``sessions/*/supervisor.json``.
Supervisors go first (SIGTERM makes one stop its sandbox), daemons last.

``terminal`` runs the real ``coop`` on a fresh pty, driven like a person at a
terminal (``Terminal``, from ``local_terminal``, which the web tests share); ``detach``
presses Ctrl+] and checks what is shown.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from coop_cli import COOP, Result, coop_environ, stop_started
from local_terminal import Terminal
from supervisor_client import info

RUN_TIMEOUT = 60.0


@pytest.fixture(autouse=True)
def stop_everything(coop_env: Any) -> Iterator[None]:
    yield
    stop_started(coop_env.coop_home)


class Coop:
    """Runs the real ``coop`` with the test's environment in a given directory."""

    def __init__(self, coop_env: Any) -> None:
        self.env = coop_environ(coop_env)
        self.coop_home: Path = coop_env.coop_home
        self.home: Path = coop_env.home

    def __call__(self, *args: str, cwd: Path, timeout: float = RUN_TIMEOUT,
                 env: Mapping[str, str] | None = None) -> Result:
        """``coop ARGS`` in ``cwd``; ``env``: variables of this run only, over the test's."""
        proc = subprocess.run([str(COOP), *args], cwd=cwd, env={**self.env, **(env or {})},
                              capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, check=False)
        return Result(proc.returncode, proc.stdout, proc.stderr)

    def daemon_pid(self) -> int | None:
        try:
            return int((self.coop_home / "daemon.pid").read_text().strip())
        except (OSError, ValueError):
            return None


@pytest.fixture
def coop(coop_env: Any) -> Coop:
    return Coop(coop_env)


def write_coopfile(workspace: Path, image: str) -> None:
    workspace.mkdir(parents=True, exist_ok=True)
    (workspace / "coop.toml").write_text(
        f'[base]\nimage = "{image}"\n\n[agent]\ncommand = "/bin/sh"\n\n'
        '[network]\nmode = "none"\n\n[session]\npersist = []\n')


@pytest.fixture
def host_workspace(coop: Coop) -> Path:
    """``~/proj`` with an ``image = "host"`` Coopfile, built."""
    workspace = coop.home / "proj"
    write_coopfile(workspace, "host")
    result = coop("init", cwd=workspace)
    assert result.returncode == 0, result
    return workspace


def supervisor_info(coop: Coop, name: str = "proj") -> dict[str, Any]:
    """``info`` straight from the session's supervisor socket (not through the daemon)."""
    return info(coop.coop_home / "sessions" / name / "supervisor.sock")


def ls_json(coop: Coop, cwd: Path) -> list[dict[str, Any]]:
    """``coop ls --json`` through the real CLI, parsed."""
    result = coop("ls", "--json", cwd=cwd)
    assert result.returncode == 0, result
    sessions: list[dict[str, Any]] = json.loads(result.stdout)
    return sessions


def detach(term: Terminal) -> None:
    """Ctrl+] and check what a person sees: the message, a restored terminal, exit 0."""
    term.type(b"\x1d")
    term.read_until(b"[detached from session proj]")
    term.read_until(b"RESTORED")
    term.read_until(b"RC=0")
