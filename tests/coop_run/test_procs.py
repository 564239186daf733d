"""A process named by (pid, start time): running, reused pid, zombie."""

from __future__ import annotations

import os
import subprocess
import sys

from coop_run.procs import alive, proc_start_time
from support.procs import wait_for


def test_a_running_process_is_alive_and_a_wrong_start_time_is_not() -> None:
    start = proc_start_time(os.getpid())
    assert start is not None
    assert alive(os.getpid(), start)
    assert not alive(os.getpid(), start + 1)  # the pid reused by another process
    assert not alive(None, start) and not alive(os.getpid(), None)


def test_a_zombie_is_not_alive() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    start = proc_start_time(child.pid)
    assert start is not None
    # Not reaped yet: it stays a zombie until we wait, and must already count as dead.
    wait_for(lambda: not alive(child.pid, start), 10, "the child to become a zombie")
    assert proc_start_time(child.pid) == start  # still in /proc, as a zombie
    child.wait()
    assert proc_start_time(child.pid) is None
