"""A process named by (pid, start time): running, reused pid, zombie, its pidfd."""

from __future__ import annotations

import os
import select
import subprocess
import sys

from coop_run.procs import alive, open_pidfd, proc_start_time
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


def test_a_pidfd_is_opened_only_for_the_recorded_process_and_polls_its_end() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                             stdin=subprocess.PIPE)
    start = proc_start_time(child.pid)
    assert start is not None
    assert open_pidfd(child.pid, start + 1) is None  # the pid given to another process
    assert open_pidfd(child.pid, None) is None and open_pidfd(None, start) is None
    pidfd = open_pidfd(child.pid, start)
    assert pidfd is not None
    try:
        assert select.select([pidfd], [], [], 0)[0] == []  # running
        assert child.stdin is not None
        child.stdin.close()  # it ends
        assert select.select([pidfd], [], [], 10)[0] == [pidfd]
        # Readable at its end, before anyone reaped it (a zombie, still in /proc).
        assert proc_start_time(child.pid) == start and not alive(child.pid, start)
    finally:
        os.close(pidfd)
        child.wait()
    assert open_pidfd(child.pid, start) is None  # reaped: gone
