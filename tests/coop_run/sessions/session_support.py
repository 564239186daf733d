"""Session fixtures: the real ``coop`` CLI, daemon and supervisors; all stopped by PID.

``stop_everything`` (autouse) stops, at the end of each test, every process started with
this test's ``COOP_HOME`` (daemons, and supervisors: forked from a daemon, they keep its
environment) plus the pids in ``daemon.pid`` and ``sessions/*/supervisor.json``.
Supervisors go first (SIGTERM makes one stop its sandbox), daemons last.

``terminal`` runs the real ``coop`` on a fresh pty, driven like a person at a
terminal (``Terminal``); ``detach`` presses Ctrl+] and checks what is shown.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from coop_cli import COOP, Result, coop_environ, stop_started
from supervisor_client import info

from support.procs import wait_for

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


# --- a person's terminal: the real ``coop`` on a pty -----------------------------------

TERMINAL_TIMEOUT = 20.0

# Runs coop, then reports whether the terminal settings came back and coop's exit code.
WRAPPER = """
import subprocess, sys, termios
before = termios.tcgetattr(0)
rc = subprocess.call(sys.argv[1:])
after = termios.tcgetattr(0)
print("RESTORED" if before == after else "CHANGED", flush=True)
print("RC=%d" % rc, flush=True)
"""


class Terminal:
    """A process on a fresh pty of ``cols`` x ``rows``: a person's terminal window."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path,
                 size: tuple[int, int]) -> None:
        pid, fd = pty.fork()
        if pid == 0:  # pragma: no cover - the child
            try:
                os.chdir(cwd)
                fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", size[1], size[0], 0, 0))
                os.execve(argv[0], argv, env)
            finally:
                os._exit(127)
        self.pid = pid
        self.fd = fd
        self.output = b""
        self._seen = 0  # where ``expect`` starts looking

    def read_until(self, needle: bytes, timeout: float = TERMINAL_TIMEOUT) -> None:
        """Read the screen until ``needle`` appears after the previous match."""
        deadline = time.monotonic() + timeout
        while (index := self.output.find(needle, self._seen)) < 0:
            self._read(deadline, needle)
        self._seen = index + len(needle)

    def read_match(self, pattern: bytes, timeout: float = TERMINAL_TIMEOUT) -> bytes:
        """Read until ``pattern`` matches after the previous match; its first group."""
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern)
        while (found := regex.search(self.output, self._seen)) is None:
            self._read(deadline, pattern)
        self._seen = found.end()
        return found.group(1)

    def _read(self, deadline: float, what: bytes) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"no {what!r} in time; "
                                 f"got {self.output[self._seen:][-2000:]!r}")
        if select.select([self.fd], [], [], remaining)[0]:
            try:
                data = os.read(self.fd, 65536)
            except OSError:
                data = b""
            if not data:
                raise AssertionError(f"pty closed before {what!r}; "
                                     f"got {self.output[self._seen:][-2000:]!r}")
            self.output += data

    def type(self, data: bytes) -> None:
        os.write(self.fd, data)

    def resize(self, cols: int, rows: int) -> None:
        """What a terminal emulator does when its window changes: new size, SIGWINCH."""
        fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGWINCH)

    def exit_status(self, timeout: float = TERMINAL_TIMEOUT) -> int | None:
        """Wait for the process to end; its exit code (None if someone else reaped it)."""
        status: list[int | None] = []

        def ended() -> bool:
            try:
                pid, raw = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                status.append(None)
                return True
            if pid == 0:
                return False
            status.append(os.waitstatus_to_exitcode(raw))
            return True

        wait_for(ended, timeout, f"pid {self.pid} to exit")
        return status[0]

    def stop(self) -> None:
        with contextlib.suppress(OSError):  # its group: a wrapper's coop attach too
            os.killpg(self.pid, signal.SIGKILL)
        with contextlib.suppress(OSError):
            os.waitpid(self.pid, 0)
        with contextlib.suppress(OSError):
            os.close(self.fd)


@contextlib.contextmanager
def terminal(coop: Coop, args: list[str], cwd: Path, size: tuple[int, int] = (80, 24),
             wrapped: bool = False) -> Iterator[Terminal]:
    argv = [str(COOP), *args]
    if wrapped:
        argv = [sys.executable, "-c", WRAPPER, *argv]
    term = Terminal(argv, {**coop.env, "TERM": "xterm"}, cwd, size)
    try:
        yield term
    finally:
        term.stop()


def detach(term: Terminal) -> None:
    """Ctrl+] and check what a person sees: the message, a restored terminal, exit 0."""
    term.type(b"\x1d")
    term.read_until(b"[detached from session proj]")
    term.read_until(b"RESTORED")
    term.read_until(b"RC=0")
