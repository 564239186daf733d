"""Sessions as a person uses them: the real ``coop`` command, daemon, supervisors, sandboxes.

Each test has its own COOP_HOME; the autouse fixture of conftest.py stops every daemon
and supervisor by PID. Workspaces use ``network.mode = "none"``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
from coop_cli import COOP
from local_terminal import terminal
from session_support import Coop, detach, ls_json, supervisor_info, write_coopfile

from coop_build.paths import CoopPaths
from coop_build.store import Store
from coop_run.daemon.commands import image_env
from coop_run.daemon.registry import pick_name, safe_name
from support.procs import pid_alive, wait_for

pytestmark = pytest.mark.asuser

TIMEOUT = 20.0


# --- pure parts -------------------------------------------------------------------------


def test_safe_name_makes_hostname_safe_names() -> None:
    assert safe_name("My Project!") == "my-project"
    assert safe_name("a/b") == "a-b"
    assert safe_name("...") == "session"
    assert safe_name("x" * 100) == "x" * 63
    assert safe_name("nlst") == "nlst"


def test_pick_name_suffixes_only_for_another_workspace() -> None:
    assert pick_name("proj", {}, "/a/proj") == "proj"
    assert pick_name("proj", {"proj": "/a/proj"}, "/a/proj") == "proj"
    assert pick_name("proj", {"proj": "/a/proj"}, "/b/proj") == "proj-2"
    assert pick_name("proj", {"proj": "/a", "proj-2": "/b"}, "/c") == "proj-3"
    long = "x" * 63
    assert pick_name(long, {long: "/a"}, "/b") == "x" * 61 + "-2"


def test_image_env_parses_name_value_pairs() -> None:
    assert image_env(["PATH=/bin:/usr/bin", "EMPTY=", "A=b=c", "junk"]) == {
        "PATH": "/bin:/usr/bin", "EMPTY": "", "A": "b=c"}


# --- helpers ------------------------------------------------------------------------------


# --- end to end -----------------------------------------------------------------------------


@pytest.mark.registry
def test_create_list_shell_kill_on_busybox(coop: Coop, test_images: Any) -> None:
    workspace = coop.home / "nlst"
    write_coopfile(workspace, test_images.busybox)
    assert coop("init", cwd=workspace).returncode == 0

    created = coop("-d", cwd=workspace)
    assert created.returncode == 0, created
    assert created.stdout.strip() == "session nlst created"
    again = coop("-d", cwd=workspace)
    assert again.returncode == 0 and "already running" in again.stdout, again

    listing = coop("ls", cwd=workspace)
    assert listing.returncode == 0, listing
    header, *rows = listing.stdout.splitlines()
    assert header.split() == ["SESSION", "WORKSPACE", "STATE", "PTYS", "CLIENTS", "AGE"]
    assert len(rows) == 1
    cells = rows[0].split()
    assert cells[:5] == ["nlst", "~/nlst", "running", "1", "0"], listing
    assert cells[5].endswith("s")

    hello = coop("shell", "nlst", "-c", "echo hi from $(hostname)", cwd=workspace)
    assert hello.returncode == 0, hello
    assert hello.stdout.replace("\r\n", "\n") == "hi from nlst\n", hello
    failed = coop("shell", "nlst", "-c", "exit 7", cwd=workspace)
    assert failed.returncode == 7, failed
    by_path = coop("shell", "-c", "pwd", cwd=workspace)  # the cwd's session by default
    assert by_path.returncode == 0 and by_path.stdout.strip() == "/workspace", by_path

    supervisor = ls_json(coop, workspace)[0]["pid"]
    killed = coop("kill", "nlst", cwd=workspace)
    assert killed.returncode == 0, killed
    assert killed.stdout.strip() == "killed session nlst"
    assert ls_json(coop, workspace) == []
    wait_for(lambda: not pid_alive(supervisor), TIMEOUT, "the supervisor to exit")
    # SPEC 5: kill removes the session directory except persist/ (no lock, no records).
    session_dir = coop.coop_home / "sessions" / "nlst"
    left = {p.name for p in session_dir.iterdir()} if session_dir.exists() else set()
    assert left <= {"persist"}, left


@pytest.mark.rootonly
def test_a_rootfs_with_host_root_files_is_rebuilt_never_started(
        coop: Coop, host_workspace: Path) -> None:
    """A build from when root's sandboxes ran as host root (its layers are host uid 0's)
    never reaches a sandbox: one line says to rebuild, and coop rebuild makes it usable."""
    paths = CoopPaths(coop.coop_home)
    record = Store(paths).workspace_build(host_workspace)
    assert record is not None
    for fs in Store(paths).lower_dirs(record):
        os.chown(fs, 0, 0)  # as that coop left them
    refused = coop("-d", cwd=host_workspace)
    assert refused.returncode == 5, refused
    assert refused.stderr.strip().splitlines() == [
        "error: the rootfs of ~/proj was built when root's sandboxes ran as host root: "
        "run coop rebuild there"], refused
    rebuilt = coop("rebuild", cwd=host_workspace)
    assert rebuilt.returncode == 0, rebuilt
    created = coop("-d", cwd=host_workspace)
    assert created.returncode == 0, created
    out = coop("shell", "proj", "-c", "stat -c %u /tmp /workspace", cwd=host_workspace)
    assert out.returncode == 0 and out.stdout.split() == ["0", "0"], out


def test_unknown_session_exits_3(coop: Coop, host_workspace: Path) -> None:
    for args in (("shell", "nope", "-c", "true"), ("attach", "nope"), ("kill", "nope"),
                 ("restart", "nope"), ("attach",)):
        result = coop(*args, cwd=host_workspace)
        assert result.returncode == 3, (args, result)
        assert result.stderr.startswith("error: no session"), result
        assert "Traceback" not in result.stderr


def test_no_rootfs_exits_5(coop: Coop) -> None:
    workspace = coop.home / "fresh"
    write_coopfile(workspace, "host")
    result = coop("-d", cwd=workspace)
    assert result.returncode == 5, result
    assert "coop init" in result.stderr and len(result.stderr.splitlines()) == 1, result
    assert ls_json(coop, workspace) == []


def test_same_basename_gets_a_suffix(coop: Coop, host_workspace: Path) -> None:
    other = coop.home / "elsewhere" / "proj"
    write_coopfile(other, "host")
    assert coop("init", cwd=other).returncode == 0
    assert coop("-d", cwd=host_workspace).stdout.strip() == "session proj created"
    assert coop("-d", cwd=other).stdout.strip() == "session proj-2 created"
    again = coop("-d", "-w", str(other), cwd=coop.home)
    assert again.stdout.strip() == "session proj-2 already running", again
    by_workspace = {s["workspace"]: s["name"] for s in ls_json(coop, coop.home)}
    assert by_workspace == {str(host_workspace.resolve()): "proj", str(other.resolve()): "proj-2"}
    out = coop("shell", "proj-2", "-c", "echo $COOP_SESSION", cwd=coop.home)
    assert out.stdout.strip() == "proj-2", out
    assert coop("kill", "--all", cwd=coop.home).returncode == 0
    assert ls_json(coop, coop.home) == []


def test_sessions_survive_kill_9_of_the_daemon(coop: Coop, host_workspace: Path) -> None:
    assert coop("-d", cwd=host_workspace).returncode == 0
    before = supervisor_info(coop, "proj")
    agent_pid = before["ptys"][0]["host_pid"]
    daemon = coop.daemon_pid()
    assert daemon is not None and pid_alive(daemon)
    os.kill(daemon, signal.SIGKILL)
    wait_for(lambda: not pid_alive(daemon), TIMEOUT, "the daemon to die")

    sessions = ls_json(coop, host_workspace)  # starts a new daemon, which rediscovers
    new_daemon = coop.daemon_pid()
    assert new_daemon is not None and new_daemon != daemon
    assert [s["name"] for s in sessions] == ["proj"]
    assert sessions[0]["pid"] == before["session"]["pid"]
    after = supervisor_info(coop, "proj")
    assert after["ptys"][0]["host_pid"] == agent_pid
    assert pid_alive(agent_pid)
    # ... and the new daemon serves it fully.
    out = coop("shell", "-c", "echo still here", cwd=host_workspace)
    assert out.returncode == 0 and out.stdout.strip() == "still here", out
    assert coop("kill", cwd=host_workspace).returncode == 0
    assert ls_json(coop, host_workspace) == []


def test_attach_in_a_terminal_types_detaches_and_restores(coop: Coop,
                                                          host_workspace: Path) -> None:
    assert coop("-d", cwd=host_workspace).returncode == 0
    with terminal(coop, ["attach", "proj"], host_workspace, (100, 30), wrapped=True) as term:
        marker = b"mark-" + str(os.getpid()).encode()
        # Typing before the stream is up is fine: input waits in the pty.
        term.type(b"echo mark-$((" + str(os.getpid()).encode() + b"+0))\r")
        term.read_until(marker + b"\r\n")
        info = supervisor_info(coop, "proj")
        agent = info["ptys"][0]
        assert (agent["cols"], agent["rows"], agent["clients"]) == (100, 30, 1)
        assert info["session"]["local_clients"] == 1
        detach(term)  # RC=0: the wrapper's report of coop attach's exit code
        term.exit_status()
    # Detaching left the session running, with nobody attached.
    wait_for(lambda: supervisor_info(coop, "proj")["session"]["local_clients"] == 0, TIMEOUT,
             "the client to be gone")
    out = coop("shell", "-c", "echo alive", cwd=host_workspace)
    assert out.stdout.strip() == "alive", out


def test_bare_coop_creates_and_attaches(coop: Coop, host_workspace: Path) -> None:
    with terminal(coop, [], host_workspace, (80, 24), wrapped=True) as term:
        term.type(b"echo $COOP_SESSION-$((40+2))\r")
        term.read_until(b"proj-42\r\n")
        detach(term)
        term.exit_status()
    assert [s["name"] for s in ls_json(coop, host_workspace)] == ["proj"]


def test_env_reaches_the_session_and_never_the_log(coop: Coop, host_workspace: Path) -> None:
    secret = f"s3cret-{os.getpid()}-value"
    with (host_workspace / "coop.toml").open("a") as fh:
        fh.write('\n[env]\nTOKEN = "$MY_TOKEN"\nPLAIN = "literal"\n')
    assert coop("init", cwd=host_workspace).returncode == 0
    assert coop("trust", cwd=host_workspace).returncode == 0  # it asks for $MY_TOKEN
    proc = coop("-d", cwd=host_workspace, env={"MY_TOKEN": secret, "NOT_REFERENCED": "nope"})
    assert proc.returncode == 0, proc.stderr
    out = coop("shell", "-c", 'echo "$TOKEN/$PLAIN/${NOT_REFERENCED:-unset}"', cwd=host_workspace)
    assert out.stdout.strip() == f"{secret}/literal/unset", out
    logs = b"".join(p.read_bytes() for p in (coop.coop_home / "logs").rglob("*.log"))
    assert secret.encode() not in logs


def test_restart_restarts_the_agent(coop: Coop, host_workspace: Path) -> None:
    assert coop("-d", cwd=host_workspace).returncode == 0
    first = supervisor_info(coop, "proj")["ptys"][0]["host_pid"]
    result = coop("restart", cwd=host_workspace)
    assert result.returncode == 0, result
    assert result.stdout.strip() == "restarting the agent of session proj"

    def new_agent() -> int | None:
        pid = supervisor_info(coop, "proj")["ptys"][0]["host_pid"]
        return pid if isinstance(pid, int) and pid != first else None

    wait_for(new_agent, TIMEOUT, "a new agent process")
    assert not pid_alive(first)


def test_ctrl_c_of_a_streaming_shell_exits_130(coop: Coop, host_workspace: Path) -> None:
    assert coop("-d", cwd=host_workspace).returncode == 0
    proc = subprocess.Popen([str(COOP), "shell", "-c", "echo started; sleep 60"],
                            cwd=host_workspace, env=coop.env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == b"started"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=TIMEOUT) == 130
    finally:
        with contextlib.suppress(OSError):
            proc.kill()
        proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
