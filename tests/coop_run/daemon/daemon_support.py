"""Daemon fixtures: the real ``coop`` CLI starts real daemons; every one is stopped by PID.

``stop_daemons`` (autouse) finds this test's daemons twice over: the pid file in the
test's ``COOP_HOME``, and every process whose environment carries that ``COOP_HOME``
(a daemon started on another ``--socket`` writes the same pid file, or none if it failed).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from coop_cli import COOP, Result, coop_environ, read_pid, stop_started

from coop_run import proctitle
from support.procs import pid_alive, processes_with_env, wait_for, with_descendants

RUN_TIMEOUT = 60.0


def daemon_pids(coop_home: Path) -> list[int]:
    """The daemons among ``coop_pids``: ``coop daemon`` (titled before they are ready)."""
    return [p.pid for p in processes_with_env("COOP_HOME", str(coop_home))
            if p.alive and p.cmdline == proctitle.DAEMON]


def zygote_pids(coop_home: Path) -> list[int]:
    """The session starters among ``coop_pids``: zygotes and what they forked (the spare,
    and the spare's waiting ``coop-init``). A zygote shows as ``coop zygote`` once its
    imports are done; it may still be ``python -m coop_run.session.zygote`` while the
    daemon serves."""
    return with_descendants([p.pid for p in processes_with_env("COOP_HOME", str(coop_home))
                             if p.alive and (p.cmdline == proctitle.ZYGOTE
                                             or "-m coop_run.session.zygote" in p.cmdline)])


@pytest.fixture(autouse=True)
def stop_daemons(coop_env: Any) -> Iterator[None]:
    yield
    stop_started(coop_env.coop_home, timeout=5.0)


class Coop:
    """Runs the real ``coop`` with the test's environment."""

    def __init__(self, coop_env: Any, cwd: Path) -> None:
        self.env = coop_environ(coop_env)
        self.coop_home: Path = coop_env.coop_home
        self.cwd = cwd

    def __call__(self, *args: str, env: dict[str, str] | None = None,
                 timeout: float = RUN_TIMEOUT) -> Result:
        proc = subprocess.run([str(COOP), *args], cwd=self.cwd, env={**self.env, **(env or {})},
                              capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, check=False)
        return Result(proc.returncode, proc.stdout, proc.stderr)

    def popen(self, *args: str, **kwargs: Any) -> subprocess.Popen[str]:
        return subprocess.Popen([str(COOP), *args], cwd=self.cwd, env=self.env, text=True,
                                stdin=subprocess.DEVNULL, **kwargs)

    @property
    def socket(self) -> Path:
        return self.coop_home / "sock"

    @property
    def pid_file(self) -> Path:
        return self.coop_home / "daemon.pid"

    @property
    def log(self) -> Path:
        return self.coop_home / "logs" / "daemon.log"

    def start_daemon(self) -> int:
        """Start the daemon the way users do (``coop ls``) and return its PID."""
        result = self("ls")
        assert result.returncode == 0, result
        pid = wait_for(lambda: read_pid(self.coop_home), 5.0, "daemon.pid")
        assert pid_alive(pid)
        return pid


@pytest.fixture
def coop(coop_env: Any, tmp_path: Path) -> Coop:
    cwd = tmp_path / "ws"
    cwd.mkdir(exist_ok=True)
    return Coop(coop_env, cwd)


@pytest.fixture
def daemon(coop: Coop) -> int:
    """A running daemon (started by ``coop ls``); its PID."""
    return coop.start_daemon()
