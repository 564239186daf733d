"""SIGHUP to a sandbox's PTY processes before ``stop()``: the hang-up a graceful
``coop kill`` gives them. A shell dies of it at once (it ignores SIGTERM); a process that
ignores SIGHUP and SIGTERM is still ended by the SIGKILL after the grace.

Real sandboxes on the static-busybox layer, as root and as the test user.
"""

from __future__ import annotations

import os
import select
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from busybox_sandbox import busybox_config, home_workspace, running_sandbox

from coop_run.sandbox.host import Sandbox
from support.bench import CoopEnv
from support.procs import pid_alive, wait_for
from support.require import needs
from support.rootfs import busybox_available

pytestmark = [pytest.mark.asuser,
              needs(busybox_available(), "needs busybox-static")]

TIMEOUT = 10.0
GRACE = 1.0


@pytest.fixture
def sandbox(coop_env: CoopEnv, busybox_layer: Path) -> Iterator[Sandbox]:
    config = busybox_config(coop_env, busybox_layer, home_workspace(coop_env), "proj",
                            persist=[])
    with running_sandbox(config) as box:
        yield box


def _read_until(fd: int, needle: bytes) -> bytes:
    """PTY output until ``needle`` shows (the process is past its start-up)."""
    seen = b""
    deadline = time.monotonic() + TIMEOUT
    while needle not in seen:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
            raise AssertionError(f"no {needle!r} within {TIMEOUT}s; got {seen!r}")
        seen += os.read(fd, 65536)
    return seen


def test_hang_up_ends_an_interactive_shell_that_ignores_sigterm(sandbox: Sandbox) -> None:
    shell = sandbox.spawn(["sh", "-i"], pty=True)
    assert shell.master_fd is not None and shell.host_pid is not None
    os.write(shell.master_fd, b"echo rea$((0))dy\r")
    _read_until(shell.master_fd, b"rea0dy")  # interactive now: SIGTERM is ignored
    sandbox.signal(shell.pid, signal.SIGTERM)
    os.write(shell.master_fd, b"echo ali$((0))ve\r")
    _read_until(shell.master_fd, b"ali0ve")  # it shrugged SIGTERM off
    sandbox.signal(shell.pid, signal.SIGHUP)
    assert sandbox.wait(shell.pid, TIMEOUT).signal == signal.SIGHUP
    os.close(shell.master_fd)
    began = time.monotonic()
    sandbox.stop(grace=5.0)
    assert time.monotonic() - began < 2.5  # nothing left to wait for


def test_what_ignores_sighup_and_sigterm_dies_by_sigkill_after_the_grace(
        sandbox: Sandbox) -> None:
    stubborn = sandbox.spawn(["sh", "-c", "trap '' HUP TERM; echo trapped; exec sleep 1000"],
                             pty=True)
    assert stubborn.master_fd is not None and stubborn.host_pid is not None
    host_pid = stubborn.host_pid
    _read_until(stubborn.master_fd, b"trapped")
    wait_for(lambda: _comm(host_pid) == "sleep", TIMEOUT, "the exec of sleep")
    sandbox.signal(stubborn.pid, signal.SIGHUP)  # ignored: discarded as it is sent
    sandbox.signal(stubborn.pid, signal.SIGCONT)
    assert pid_alive(host_pid)
    began = time.monotonic()
    sandbox.stop(grace=GRACE)
    os.close(stubborn.master_fd)
    elapsed = time.monotonic() - began
    assert not pid_alive(host_pid)
    assert sandbox.init_pid is not None and not pid_alive(sandbox.init_pid)
    assert elapsed >= GRACE  # only the SIGKILL after the grace ended it


def _comm(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return None
