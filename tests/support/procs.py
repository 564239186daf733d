"""Process helpers for tests: wait on conditions, pick ports, stop processes by PID.

Tests never sleep to synchronise: they poll a condition with a deadline through
``wait_for``, and every process a test starts is stopped by its PID with ``stop_pid``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

POLL_INTERVAL = 0.01
MAX_POLL_INTERVAL = 0.1


class WaitTimeout(AssertionError):
    """A condition a test waited for did not become true in time."""


def wait_for(predicate: Callable[[], T], timeout: float, what: str) -> T:
    """Polls ``predicate`` until it returns something truthy, and returns that.

    Intervals start at 10 ms and grow to 100 ms. Raises ``WaitTimeout`` naming ``what``
    after ``timeout`` seconds (the predicate is always tried once more at the deadline).
    """
    deadline = time.monotonic() + timeout
    interval = POLL_INTERVAL
    while True:
        value = predicate()
        if value:
            return value
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise WaitTimeout(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(min(interval, remaining))
        interval = min(interval * 2, MAX_POLL_INTERVAL)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (prefer binding port 0 in the server itself)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class ProcInfo:
    """What /proc says about one process."""

    pid: int
    ppid: int
    state: str
    cmdline: str

    @property
    def alive(self) -> bool:
        """Running or sleeping; a zombie (Z) or dead (X) process is not alive."""
        return self.state not in ("Z", "X")


def proc_info(pid: int) -> ProcInfo | None:
    """Reads /proc/PID/stat and cmdline; None if the process is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name is in parentheses and may itself contain spaces or ')'.
    fields = stat[stat.rindex(")") + 2:].split()
    cmdline = raw.replace(b"\0", b" ").decode(errors="replace").strip()
    if not cmdline:
        cmdline = "[" + stat[stat.index("(") + 1:stat.rindex(")")] + "]"
    return ProcInfo(pid=pid, ppid=int(fields[1]), state=fields[0], cmdline=cmdline)


def pid_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    info = proc_info(pid)
    return info is not None and info.alive


def children(parent: int | None = None) -> list[ProcInfo]:
    """Every process whose parent is ``parent`` (default: this process)."""
    parent = os.getpid() if parent is None else parent
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        info = proc_info(int(entry))
        if info is not None and info.ppid == parent:
            found.append(info)
    return found


def _reap(pid: int) -> bool:
    """Reaps ``pid`` if it is our exited child; True when it is gone for good."""
    try:
        done, _status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return not pid_alive(pid)
    return done == pid


def stop_pid(pid: int, timeout: float = 5.0) -> None:
    """Stops ``pid``: SIGTERM, then SIGKILL after ``timeout`` seconds; reaps our children.

    Returns quietly if the process is already gone. Raises ``WaitTimeout`` if it survives
    SIGKILL for another ``timeout`` (for instance stuck in the kernel).
    """
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        _reap(pid)
        return
    try:
        wait_for(lambda: _reap(pid), timeout, f"pid {pid} to exit after SIGTERM")
        return
    except WaitTimeout:
        pass
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    wait_for(lambda: _reap(pid), timeout, f"pid {pid} to exit after SIGKILL")


def processes_with_env(name: str, value: str) -> list[ProcInfo]:
    """Processes (of any parent) whose environment holds ``name=value``.

    Daemons that double-fork are re-parented to init, but keep the environment they were
    started with: a marker variable set by the test session finds them. Processes whose
    environment we may not read (other users) are skipped.
    """
    needle = f"{name}={value}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            environ = Path(f"/proc/{entry}/environ").read_bytes()
        except OSError:
            continue
        if needle in environ.split(b"\0"):
            info = proc_info(int(entry))
            if info is not None:
                found.append(info)
    return found


def with_descendants(pids: list[int]) -> list[int]:
    """``pids`` and every process below them (``/proc/PID/task/*/children``; a child
    that has exited but is not yet reaped is listed too).

    Finds what carries no marker of its own: a sandbox's init (``coop-init``) runs with
    an empty environment, and is not dumpable, so its environ cannot be read anyway.
    """
    found: list[int] = []
    todo = list(pids)
    while todo:
        pid = todo.pop()
        if pid in found:
            continue
        found.append(pid)
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                kids = Path(f"/proc/{pid}/task/{task}/children").read_text().split()
            except OSError:
                continue
            todo += [int(kid) for kid in kids]
    return sorted(found)


def reap_zombies() -> None:
    """Collects exited children nobody waited for (only safe once no test is running)."""
    for info in children():
        if not info.alive:
            _reap(info.pid)
