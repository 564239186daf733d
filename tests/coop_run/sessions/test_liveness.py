"""While one session stops slowly, the daemon and the other sessions answer at once and
``coop ls`` shows the stopping session as it is; a supervisor that dies leaves the table.

Real CLI, daemon, supervisors and sandboxes (``image = "host"``, ``network.mode = "none"``);
the autouse fixture of conftest.py stops whatever a test leaves running.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from coop_cli import COOP
from session_support import Coop, ls_json, supervisor_info, write_coopfile
from supervisor_client import Stream

from coop_run.ipc.client import Client
from support.procs import pid_alive, wait_for

pytestmark = pytest.mark.asuser

TIMEOUT = 20.0
PROMPT = 0.5  # "at once": generous on a loaded machine, far below the grace
GRACE = 5.0  # a session's stop grace (the supervisor's default): the agent waits it out
# An agent that neither the hang-up nor SIGTERM ends: only the SIGKILL after the grace.
STUBBORN = '[agent]\ncommand = "/bin/sh"\nargs = ["-c", "trap \'\' HUP TERM; exec sleep 1000"]\n'


def _session(coop: Coop, name: str, agent: str | None = None) -> Path:
    """A running session of ``~/NAME`` (image "host"), with ``agent`` as its [agent] table."""
    workspace = coop.home / name
    write_coopfile(workspace, "host")
    if agent is not None:
        coopfile = workspace / "coop.toml"
        text = coopfile.read_text()
        start = text.index("[agent]")
        end = text.index("[network]")
        coopfile.write_text(text[:start] + agent + "\n" + text[end:])
    for args in (("init",), ("-d",)):
        result = coop(*args, cwd=workspace)
        assert result.returncode == 0, result
    return workspace


def _listed(coop: Coop, cwd: Path) -> dict[str, dict[str, Any]]:
    began = time.monotonic()
    sessions = ls_json(coop, cwd)
    took = time.monotonic() - began
    # The daemon asks every supervisor; one that does not answer costs its 5 s timeout.
    assert took < 2.5, f"coop ls took {took:.2f}s"
    return {entry["name"]: entry for entry in sessions}


def test_a_slow_kill_leaves_the_daemon_and_the_other_sessions_answering(coop: Coop) -> None:
    alpha = _session(coop, "alpha", STUBBORN)
    _session(coop, "beta")
    _session(coop, "gamma")
    daemon_socket = coop.coop_home / "sock"
    gamma = Stream.open(daemon_socket, "attach", session="gamma", cols=80, rows=24)
    gamma.run("echo rea''dy", "ready")
    killer = subprocess.Popen([str(COOP), "kill", "alpha"], cwd=alpha, env=coop.env,
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    began = time.monotonic()
    beta: Stream | None = None
    try:
        def stopping() -> bool:
            state = _listed(coop, alpha)["alpha"]["state"]
            assert state in ("running", "stopping"), state
            return bool(state == "stopping")

        wait_for(stopping, TIMEOUT, "alpha to be shown stopping")
        opened = time.monotonic()
        beta = Stream.open(daemon_socket, "shell", session="beta", cols=80, rows=24)
        beta.run("echo o''pen", "open")
        assert time.monotonic() - opened < PROMPT
        typed = time.monotonic()
        gamma.run("echo ty''ped", "typed")
        assert time.monotonic() - typed < PROMPT
        assert killer.poll() is None  # all of that while alpha was still stopping
        seen: list[str] = []

        def alpha_gone() -> bool:
            sessions = _listed(coop, alpha)
            assert (sessions["beta"]["state"], sessions["gamma"]["state"]) == (
                "running", "running"), sessions
            if "alpha" in sessions:
                seen.append(sessions["alpha"]["state"])
                return False
            return True

        wait_for(alpha_gone, GRACE + TIMEOUT, "alpha to leave coop ls")
        assert seen and set(seen) == {"stopping"}, seen  # as it is, never "unreachable"
        out, err = killer.communicate(timeout=TIMEOUT)
        assert (killer.returncode, out.strip()) == (0, "killed session alpha"), err
        assert time.monotonic() - began >= GRACE  # the stop was the slow kind throughout
        gamma.run("echo sti''ll", "still")
        beta.run("echo sti''ll", "still")
    finally:
        if killer.poll() is None:
            killer.kill()
            killer.communicate()
        gamma.close()
        if beta is not None:
            beta.close()


def test_a_supervisor_that_dies_leaves_the_table_at_once(coop: Coop) -> None:
    """The daemon watches each supervisor's pidfd: nothing has to ask for it to notice."""
    workspace = _session(coop, "proj")
    supervisor = supervisor_info(coop)["session"]["pid"]
    with Client.connect(coop.coop_home / "sock", timeout=TIMEOUT) as client:
        assert client.request({"cmd": "status"})["sessions"] == 1
        os.kill(supervisor, signal.SIGKILL)
        wait_for(lambda: not pid_alive(supervisor), TIMEOUT, "the supervisor to die")
        wait_for(lambda: client.request({"cmd": "status"})["sessions"] == 0, TIMEOUT,
                 "the daemon to drop the session")
    assert ls_json(coop, workspace) == []
