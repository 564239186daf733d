"""A person's terminal: the real ``coop`` on a fresh pty, driven by writing keystrokes to
the master and reading the screen until a marker shows up (session and web tests alike).
The process and its group are stopped by PID when the ``terminal`` block ends."""

from __future__ import annotations

import contextlib
import fcntl
import os
import pty
import re
import select
import signal
import struct
import sys
import termios
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from coop_cli import COOP

from support.procs import wait_for


class HasEnv(Protocol):
    """A test's ``coop`` runner: its environment is the terminal's."""

    env: dict[str, str]


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
def terminal(coop: HasEnv, args: list[str], cwd: Path, size: tuple[int, int] = (80, 24),
             wrapped: bool = False) -> Iterator[Terminal]:
    """The real ``coop ARGS`` on a fresh pty of ``size`` (``wrapped``: it then also
    reports whether the terminal's settings came back, and its exit code)."""
    argv = [str(COOP), *args]
    if wrapped:
        argv = [sys.executable, "-c", WRAPPER, *argv]
    term = Terminal(argv, {**coop.env, "TERM": "xterm"}, cwd, size)
    try:
        yield term
    finally:
        term.stop()
