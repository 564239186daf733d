"""Session fixtures: the real ``coop`` CLI, daemon and supervisors; all stopped by PID.

``stop_everything`` (autouse) stops, at the end of each test, every process started with
this test's ``COOP_HOME`` (daemons, and supervisors: forked from a daemon, they keep its
environment) plus the pids in ``daemon.pid`` and ``sessions/*/supervisor.json``.
Supervisors go first (SIGTERM makes one stop its sandbox), daemons last.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from coop_cli import COOP, Result, coop_environ

from coop_run.framing import FrameDecoder, encode_message
from support.procs import pid_alive, processes_with_env, stop_pid

RUN_TIMEOUT = 60.0


def _recorded_pids(coop_home: Path) -> tuple[set[int], set[int]]:
    supervisors: set[int] = set()
    for state in coop_home.glob("sessions/*/supervisor.json"):
        try:
            pid = json.loads(state.read_text()).get("pid")
        except (OSError, ValueError):
            continue
        if isinstance(pid, int):
            supervisors.add(pid)
    daemons: set[int] = set()
    with contextlib.suppress(OSError, ValueError):
        daemons.add(int((coop_home / "daemon.pid").read_text().strip()))
    return supervisors, daemons


@pytest.fixture(autouse=True)
def stop_everything(coop_env: Any) -> Iterator[None]:
    yield
    supervisors, daemons = _recorded_pids(coop_env.coop_home)
    started = {p.pid for p in processes_with_env("COOP_HOME", str(coop_env.coop_home))
               if p.alive}
    for pid in sorted(supervisors) + sorted(started - supervisors - daemons) + sorted(daemons):
        if pid_alive(pid):
            stop_pid(pid, timeout=10.0)


class Coop:
    """Runs the real ``coop`` with the test's environment in a given directory."""

    def __init__(self, coop_env: Any) -> None:
        self.env = coop_environ(coop_env)
        self.coop_home: Path = coop_env.coop_home
        self.home: Path = coop_env.home

    def __call__(self, *args: str, cwd: Path, timeout: float = RUN_TIMEOUT) -> Result:
        proc = subprocess.run([str(COOP), *args], cwd=cwd, env=self.env, capture_output=True,
                              text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                              check=False)
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


def supervisor_info(coop: Coop, name: str = "proj", timeout: float = 20.0) -> dict[str, Any]:
    """``info`` straight from the session's supervisor socket (not through the daemon)."""
    path = coop.coop_home / "sessions" / name / "supervisor.sock"
    decoder = FrameDecoder()
    replies: list[Any] = []
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(os.fsencode(path))
        sock.sendall(encode_message({"version": 1}) + encode_message({"cmd": "info"}))
        while len(replies) < 2:
            data = sock.recv(65536)
            assert data, "supervisor hung up"
            replies.extend(decoder.feed(data))
    assert replies[1]["ok"] is True, replies
    info: dict[str, Any] = replies[1]
    return info


def ls_json(coop: Coop, cwd: Path) -> list[dict[str, Any]]:
    """``coop ls --json`` through the real CLI, parsed."""
    result = coop("ls", "--json", cwd=cwd)
    assert result.returncode == 0, result
    sessions: list[dict[str, Any]] = json.loads(result.stdout)
    return sessions
