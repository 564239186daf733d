"""coop as a person uses it at a terminal (issue 4 point 7): the real ``coop`` in real ptys.

Every client is a ``coop`` process on its own pty (``pty.fork``), driven by writing
keystrokes to the master and reading the screen until a marker shows up. Markers are built
by the shell inside (``$((20+22))``) so the echo of what was typed never matches them.
Every process is stopped by PID (here and by the autouse fixture of conftest.py).
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from local_terminal import Terminal, terminal
from session_support import Coop, detach, ls_json, supervisor_info
from supervisor_client import Stream

from support.procs import WaitTimeout, pid_alive, wait_for

pytestmark = pytest.mark.asuser

TIMEOUT = 20.0

def marker(tag: str) -> tuple[bytes, bytes]:
    """What to type (``echo tag-$((20+22))``) and what the shell prints (``tag-42``)."""
    return f"echo {tag}-$((20+22))\r".encode(), f"{tag}-42".encode()


def say(term: Terminal, tag: str) -> None:
    """Type a command at the agent's shell and wait for its output on this terminal."""
    typed, shown = marker(tag)
    term.type(typed)
    term.read_until(shown)


def local_clients(coop: Coop) -> int:
    count: int = supervisor_info(coop)["session"]["local_clients"]
    return count


def start_detached(coop: Coop, workspace: Path) -> None:
    result = coop("-d", cwd=workspace)
    assert result.returncode == 0, result


# --- the tests ----------------------------------------------------------------------------


def test_type_detach_reattach_shows_the_screen_again(coop: Coop, host_workspace: Path) -> None:
    with terminal(coop, [], host_workspace, wrapped=True) as first:  # bare coop: create
        say(first, "before-detach")
        detach(first)
        assert first.exit_status() == 0
    wait_for(lambda: local_clients(coop) == 0, TIMEOUT, "the client to leave")
    with terminal(coop, ["attach", "proj"], host_workspace, wrapped=True) as again:
        # Nothing typed yet: the earlier output can only come from the scrollback replay.
        again.read_until(b"before-detach-42")
        say(again, "after-reattach")
        detach(again)
        assert again.exit_status() == 0


def test_two_clients_type_and_see_each_other(coop: Coop, host_workspace: Path) -> None:
    start_detached(coop, host_workspace)
    with (terminal(coop, ["attach"], host_workspace, wrapped=True) as one,
          terminal(coop, ["attach"], host_workspace, wrapped=True) as two):
        wait_for(lambda: local_clients(coop) == 2, TIMEOUT, "two attached clients")
        typed, shown = marker("from-one")
        one.type(typed)
        one.read_until(shown)
        two.read_until(b"echo from-one-$((20+22))")  # the keystrokes echoed to the other
        two.read_until(shown)
        typed, shown = marker("from-two")
        two.type(typed)
        two.read_until(shown)
        one.read_until(b"echo from-two-$((20+22))")
        one.read_until(shown)
        detach(one)
        detach(two)
    wait_for(lambda: local_clients(coop) == 0, TIMEOUT, "both clients to leave")


def _stty_size(term: Terminal, tag: str) -> None:
    term.type(f"echo {tag}=$(stty size)=\r".encode())


def test_resize_follows_the_smallest_client(coop: Coop, host_workspace: Path) -> None:
    start_detached(coop, host_workspace)
    with terminal(coop, ["attach"], host_workspace, (100, 30)) as big:
        _stty_size(big, "s1")
        big.read_until(b"s1=30 100=")
        big.resize(120, 40)
        wait_for(lambda: supervisor_info(coop)["ptys"][0]["cols"] == 120, TIMEOUT,
                 "the PTY to follow the window")
        _stty_size(big, "s2")
        big.read_until(b"s2=40 120=")
        with terminal(coop, ["attach"], host_workspace, (90, 50)) as small:
            wait_for(lambda: local_clients(coop) == 2, TIMEOUT, "two attached clients")
            _stty_size(small, "s3")
            small.read_until(b"s3=40 90=")  # the smallest of each: 90 columns, 40 rows
            small.resize(150, 20)
            wait_for(lambda: supervisor_info(coop)["ptys"][0]["rows"] == 20, TIMEOUT,
                     "the PTY to follow the smaller window")
            _stty_size(big, "s4")
            big.read_until(b"s4=20 120=")
            small.type(b"\x1d")
            small.read_until(b"[detached from session proj]")
            assert small.exit_status() == 0
        wait_for(lambda: supervisor_info(coop)["ptys"][0]["rows"] == 40, TIMEOUT,
                 "the PTY to grow back once the small client left")
        _stty_size(big, "s5")
        big.read_until(b"s5=40 120=")


def test_shell_beside_the_agent_sees_its_processes(coop: Coop, host_workspace: Path) -> None:
    start_detached(coop, host_workspace)
    with terminal(coop, ["attach"], host_workspace) as agent:
        agent.type(b"echo agent-pid=$((0+$$))=\r")
        pid = agent.read_match(rb"agent-pid=(\d+)=").decode()
        with terminal(coop, ["shell"], host_workspace, wrapped=True) as shell:
            shell.type(f"kill -0 {pid} && echo seen-$((0+{pid}))\r".encode())
            shell.read_until(f"seen-{pid}".encode())
            shell.type(b"echo $COOP_SESSION-$((1+1))\r")
            shell.read_until(b"proj-2")
            shell.type(b"exit 7\r")
            shell.read_until(b"RESTORED")
            shell.read_until(b"RC=7")  # coop shell exits with the shell's code
        say(agent, "agent-still-here")


def test_kill_ends_the_session_and_detaches_the_client(coop: Coop,
                                                      host_workspace: Path) -> None:
    start_detached(coop, host_workspace)
    with terminal(coop, ["attach"], host_workspace, wrapped=True) as term:
        say(term, "alive")
        agent_pid = supervisor_info(coop)["ptys"][0]["host_pid"]
        result = coop("kill", cwd=host_workspace)
        assert result.returncode == 0 and "killed session proj" in result.stdout, result
        term.read_until(b"[detached from session proj]")
        term.read_until(b"RESTORED")
        term.read_until(b"RC=0")
    assert ls_json(coop, host_workspace) == []
    wait_for(lambda: not pid_alive(agent_pid), TIMEOUT, "the agent to be gone")


def test_kill_9_of_the_daemon_leaves_the_client_attached(coop: Coop,
                                                        host_workspace: Path) -> None:
    start_detached(coop, host_workspace)
    with terminal(coop, ["attach"], host_workspace, wrapped=True) as term:
        say(term, "before-kill")
        daemon = coop.daemon_pid()
        assert daemon is not None
        os.kill(daemon, signal.SIGKILL)
        wait_for(lambda: not pid_alive(daemon), TIMEOUT, "the daemon to die")
        say(term, "after-kill")  # the supervisor owns the client: nothing was cut
        sessions = ls_json(coop, host_workspace)  # a new daemon, which rediscovers
        assert coop.daemon_pid() not in (None, daemon)
        assert [(s["name"], s["local_clients"]) for s in sessions] == [("proj", 1)]
        say(term, "after-rediscovery")
        detach(term)


@pytest.mark.parametrize("how", ["shutdown", "sigterm"])
def test_daemon_shutdown_detaches_clients_and_keeps_sessions(coop: Coop, host_workspace: Path,
                                                             how: str) -> None:
    start_detached(coop, host_workspace)
    before = supervisor_info(coop)
    with terminal(coop, ["attach"], host_workspace, wrapped=True) as term:
        say(term, "attached")
        daemon = coop.daemon_pid()
        assert daemon is not None
        if how == "shutdown":
            result = coop("shutdown", cwd=host_workspace)
            assert result.returncode == 0, result
        else:
            os.kill(daemon, signal.SIGTERM)
        term.read_until(b"[detached from session proj]")
        term.read_until(b"RESTORED")
        term.read_until(b"RC=0")
        wait_for(lambda: not pid_alive(daemon), TIMEOUT, "the daemon to exit")
    after = supervisor_info(coop)
    assert after["session"]["pid"] == before["session"]["pid"]
    assert after["ptys"][0]["host_pid"] == before["ptys"][0]["host_pid"]
    assert after["session"]["local_clients"] == 0
    assert [s["name"] for s in ls_json(coop, host_workspace)] == ["proj"]
    # The session carries on: attach again and find the earlier screen and a live agent.
    with terminal(coop, ["attach"], host_workspace, wrapped=True) as again:
        again.read_until(b"attached-42")
        say(again, "back")
        detach(again)


def test_shutdown_leaves_direct_supervisor_clients_alone(coop: Coop,
                                                        host_workspace: Path) -> None:
    """Only the clients the daemon handed over are detached (a web server's stay)."""
    start_detached(coop, host_workspace)
    path = coop.coop_home / "sessions" / "proj" / "supervisor.sock"
    direct = Stream.open(path, "attach", kind="web")
    with direct.sock:
        with terminal(coop, ["attach"], host_workspace, wrapped=True) as term:
            wait_for(lambda: local_clients(coop) == 1, TIMEOUT, "the local client")
            assert coop("shutdown", cwd=host_workspace).returncode == 0
            term.read_until(b"[detached from session proj]")
            term.read_until(b"RC=0")
        info = supervisor_info(coop)["session"]
        assert (info["local_clients"], info["web_clients"]) == (0, 1)
        # The direct client still works and was never told it was detached.
        direct.type(b"echo web-$((40+2))\r")
        direct.wait_output(b"web-42", TIMEOUT)
        assert not any(e.get("event") == "detached" for e in direct.events), direct.events


def test_idle_exit_waits_for_the_last_session(coop: Coop, host_workspace: Path) -> None:
    idle = 1.0
    coop.env["COOP_DAEMON_IDLE_SECONDS"] = str(idle)
    start_detached(coop, host_workspace)
    daemon = coop.daemon_pid()
    assert daemon is not None
    # A session exists: the daemon must outlive several idle periods.
    with pytest.raises(WaitTimeout):
        wait_for(lambda: not pid_alive(daemon), 4 * idle, "the daemon to exit")
    assert coop.daemon_pid() == daemon
    assert coop("kill", cwd=host_workspace).returncode == 0
    wait_for(lambda: not pid_alive(daemon), TIMEOUT, "the idle daemon to exit")
    assert not (coop.coop_home / "daemon.pid").exists()
    # The next command starts a fresh daemon, which finds no session.
    assert ls_json(coop, host_workspace) == []
