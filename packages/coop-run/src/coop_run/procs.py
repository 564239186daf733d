"""Naming a process for good: a pid plus its start time (pids are reused, the pair is not).

Session directories, network records and the daemon's session registry all remember
processes this way; this module is the one place that reads them back.
"""

from __future__ import annotations

import os
from pathlib import Path


def _stat_fields(pid: int) -> list[bytes] | None:
    """The fields of /proc/PID/stat after the command name, or None when unreadable."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    # The command name may contain spaces and parentheses: split after the last ')'.
    return raw[raw.rfind(b")") + 2 :].split()


def proc_start_time(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat (clock ticks since boot), None when the pid is gone."""
    fields = _stat_fields(pid)
    try:
        return int(fields[19]) if fields is not None else None
    except (IndexError, ValueError):
        return None


def alive(pid: int | None, start: int | None) -> bool:
    """The process recorded as (pid, start time) still runs (a zombie does not)."""
    if not pid or start is None:
        return False
    fields = _stat_fields(pid)
    try:
        return fields is not None and fields[0] not in (b"Z", b"X") and int(fields[19]) == start
    except (IndexError, ValueError):
        return False


def open_pidfd(pid: int | None, start: int | None) -> int | None:
    """A pidfd of the process recorded as (pid, start time), or None when that process is
    gone. The pidfd polls readable once the process has ended (a zombie has); the caller
    closes it.

    Opened first, checked after: an open pidfd names one process whatever its pid comes
    to name later, so a start time that still matches after the open proves it is ours
    and not a process that was given the pid again.
    """
    if not pid or start is None:
        return None
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return None
    if proc_start_time(pid) != start:
        os.close(fd)
        return None
    return fd
