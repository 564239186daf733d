"""``coop kill`` hangs terminals up before the grace; ``--config`` reaches the session.

Real CLI, daemon, supervisors and sandboxes (``image = "host"``, ``network.mode = "none"``);
the autouse fixture of conftest.py stops whatever a test leaves running.
"""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from coop_cli import COOP
from session_support import Coop, ls_json, supervisor_info
from supervisor_client import Stream

from coop_run.errors import RemoteError
from coop_run.ipc import protocol
from coop_run.ipc.client import Client
from coop_run.ipc.framing import encode_data
from support.procs import children, pid_alive, wait_for

pytestmark = pytest.mark.asuser

TIMEOUT = 20.0
QUICK_KILL = 2.5  # well under the 5 s grace: the hang-up, not SIGKILL, ended the shells


def _open_shell(coop: Coop, name: str = "proj") -> socket.socket:
    """An interactive shell PTY (no command) held open by a client straight on the
    supervisor socket; returned past the ``shell`` answer."""
    path = coop.coop_home / "sessions" / name / "supervisor.sock"
    return Stream.open(path, "shell", cols=80, rows=24).sock


def _child_named(pid: int, name: str) -> int | None:
    return next((c.pid for c in children(pid) if _comm(c.pid) == name), None)


def _comm(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return None


def test_kill_hangs_up_interactive_shells_instead_of_waiting_the_grace(
        coop: Coop, host_workspace: Path) -> None:
    # The agent is an interactive /bin/sh, which ignores SIGTERM; so is the extra shell,
    # whose foreground job ignores SIGTERM too: only the hang-up ends them quickly.
    assert coop("-d", cwd=host_workspace).returncode == 0
    client = _open_shell(coop)
    try:
        ptys = supervisor_info(coop)["ptys"]
        pids = [p["host_pid"] for p in ptys]
        assert len(pids) == 2 and all(isinstance(p, int) and pid_alive(p) for p in pids), ptys
        client.sendall(encode_data(b"sh -c \"trap '' TERM; exec sleep 1000\"\r"))
        job = wait_for(lambda: _child_named(pids[1], "sleep"), TIMEOUT, "the foreground job")
        pids.append(job)
        began = time.monotonic()
        killed = coop("kill", cwd=host_workspace)
        elapsed = time.monotonic() - began
    finally:
        client.close()
    assert killed.returncode == 0, killed
    assert killed.stdout.strip() == "killed session proj"
    assert elapsed < QUICK_KILL, f"coop kill took {elapsed:.2f}s"
    assert [pid for pid in pids if pid_alive(pid)] == []
    assert ls_json(coop, host_workspace) == []


def test_kill_of_an_agent_that_never_stops_writing(coop: Coop, host_workspace: Path) -> None:
    (host_workspace / "coop.toml").write_text(
        '[base]\nimage = "host"\n\n[agent]\ncommand = "yes"\nargs = ["output"]\n\n'
        '[network]\nmode = "none"\n\n[session]\npersist = []\n')
    assert coop("init", cwd=host_workspace).returncode == 0
    assert coop("-d", cwd=host_workspace).returncode == 0
    agent = supervisor_info(coop)["ptys"][0]["host_pid"]
    began = time.monotonic()
    killed = coop("kill", cwd=host_workspace)
    elapsed = time.monotonic() - began
    assert killed.returncode == 0, killed
    assert elapsed < QUICK_KILL, f"coop kill took {elapsed:.2f}s"
    assert not pid_alive(agent)


def test_kill_f_is_immediate(coop: Coop, host_workspace: Path) -> None:
    assert coop("-d", cwd=host_workspace).returncode == 0
    agent = supervisor_info(coop)["ptys"][0]["host_pid"]
    began = time.monotonic()
    killed = coop("kill", "-f", cwd=host_workspace)
    elapsed = time.monotonic() - began
    assert killed.returncode == 0, killed
    assert elapsed < QUICK_KILL, f"coop kill -f took {elapsed:.2f}s"
    assert not pid_alive(agent)


# --- --config: the global layer of bare coop / create -----------------------------------


def test_config_option_is_the_global_layer_of_the_session(coop: Coop,
                                                          host_workspace: Path) -> None:
    (coop.home / "other.toml").write_text(
        '[env]\nFOO = "from-global"\nBAR = "$MY_GLOBAL_VAR"\n')
    # A daemon started without the variable: only the CLI can send it, and it sends the
    # variables the --config file references only if it reads that file.
    assert coop("ls", cwd=host_workspace).returncode == 0
    env = {**coop.env, "MY_GLOBAL_VAR": "from-cli"}
    created = subprocess.run([str(COOP), "--config", "../other.toml", "-d"],
                             cwd=host_workspace, env=env, capture_output=True, text=True,
                             timeout=TIMEOUT, stdin=subprocess.DEVNULL, check=False)
    assert created.returncode == 0, created.stderr
    out = coop("shell", "-c", 'echo "$FOO/$BAR"', cwd=host_workspace)
    assert out.returncode == 0, out
    assert out.stdout.strip() == "from-global/from-cli", out


@pytest.mark.parametrize(("content", "words"), [
    ("[env\nFOO = 1\n", "invalid TOML"),
    (None, "cannot read"),  # the path runs through a regular file
])
def test_bad_config_is_one_line_and_exit_2(coop: Coop, host_workspace: Path,
                                          content: str | None, words: str) -> None:
    if content is not None:
        path = coop.home / "broken.toml"
        path.write_text(content)
    else:
        (coop.home / "plain-file").write_text("")
        path = coop.home / "plain-file" / "default.toml"
    result = coop("--config", str(path), "-d", cwd=host_workspace)
    assert result.returncode == 2, result
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result
    assert words in lines[0], result
    assert ls_json(coop, host_workspace) == []


def _daemon(coop: Coop, cwd: Path) -> Client:
    assert coop("ls", cwd=cwd).returncode == 0  # the daemon is up
    return Client.connect(coop.coop_home / "sock", timeout=TIMEOUT)


@pytest.mark.parametrize(("fields", "words"), [
    ({"config": "relative/default.toml"}, "is not an absolute path"),
    ({"config": "/a\0b"}, "is not an absolute path"),
    ({"config": 7}, "field 'config' must be a string"),
    ({"overrides": ["env"]}, "field 'overrides' must be an object"),
])
def test_create_checks_config_and_overrides(coop: Coop, host_workspace: Path,
                                            fields: dict[str, Any], words: str) -> None:
    with _daemon(coop, host_workspace) as client:
        with pytest.raises(RemoteError) as info:
            client.request({"cmd": "create", "workspace": str(host_workspace), **fields})
        assert info.value.code == protocol.INVALID_COMMAND
        assert words in info.value.message and "\n" not in info.value.message
        assert client.request({"cmd": "ls"})["sessions"] == []  # and it keeps serving


def test_create_overrides_and_config_reach_the_coopfile(coop: Coop,
                                                        host_workspace: Path) -> None:
    config = coop.home / "layer.toml"
    config.write_text('[env]\nFROM_GLOBAL = "yes"\nFOO = "global"\n')
    with _daemon(coop, host_workspace) as client:
        reply = client.request({"cmd": "create", "workspace": str(host_workspace),
                                "detach": True, "config": str(config),
                                "overrides": {"env": {"FOO": "override"}}})
        assert reply["created"] is True, reply
    out = coop("shell", "-c", 'echo "$FROM_GLOBAL/$FOO"', cwd=host_workspace)
    assert out.stdout.strip() == "yes/override", out
