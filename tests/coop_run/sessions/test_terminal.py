"""coop as a person uses it at a terminal (issue 4 point 7): the real ``coop`` in real ptys.

Every client is a ``coop`` process on its own pty (``pty.fork``), driven by writing
keystrokes to the master and reading the screen until a marker shows up. Markers are built
by the shell inside (``$((20+22))``) so the echo of what was typed never matches them.
Every process is stopped by PID (here and by the autouse fixture of conftest.py).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pty
import re
import select
import signal
import socket
import struct
import sys
import termios
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from coop_cli import COOP
from session_support import Coop, ls_json, supervisor_info

from coop_run.framing import (
    Control,
    Data,
    StreamDecoder,
    encode_data,
    encode_message,
)
from support.procs import pid_alive, wait_for

pytestmark = pytest.mark.asuser

TIMEOUT = 20.0

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

    def read_until(self, needle: bytes, timeout: float = TIMEOUT) -> None:
        """Read the screen until ``needle`` appears after the previous match."""
        deadline = time.monotonic() + timeout
        while (index := self.output.find(needle, self._seen)) < 0:
            self._read(deadline, needle)
        self._seen = index + len(needle)

    def read_match(self, pattern: bytes, timeout: float = TIMEOUT) -> bytes:
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

    def exit_status(self, timeout: float = TIMEOUT) -> int | None:
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
        with contextlib.suppress(OSError):
            os.kill(self.pid, signal.SIGKILL)
        with contextlib.suppress(OSError):
            os.waitpid(self.pid, 0)
        with contextlib.suppress(OSError):
            os.close(self.fd)


@contextlib.contextmanager
def terminal(coop: Coop, args: list[str], cwd: Path, size: tuple[int, int] = (80, 24),
             wrapped: bool = False) -> Iterator[Terminal]:
    argv = [str(COOP), *args]
    if wrapped:
        argv = [sys.executable, "-c", WRAPPER, *argv]
    term = Terminal(argv, {**coop.env, "TERM": "xterm"}, cwd, size)
    try:
        yield term
    finally:
        term.stop()


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


def detach(term: Terminal) -> None:
    """Ctrl+] and check what a person sees: the message, a restored terminal, exit 0."""
    term.type(b"\x1d")
    term.read_until(b"[detached from session proj]")
    term.read_until(b"RESTORED")
    term.read_until(b"RC=0")


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


def _recv_message(sock: socket.socket) -> dict[str, Any]:
    """One length-prefixed JSON message, read byte-exactly (stream frames follow it)."""
    def exact(size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = sock.recv(size - len(data))
            assert chunk, "supervisor hung up"
            data += chunk
        return data

    (size,) = struct.unpack(">I", exact(4))
    message: dict[str, Any] = json.loads(exact(size))
    return message


def test_shutdown_leaves_direct_supervisor_clients_alone(coop: Coop,
                                                        host_workspace: Path) -> None:
    """Only the clients the daemon handed over are detached (a web server's stay)."""
    start_detached(coop, host_workspace)
    path = coop.coop_home / "sessions" / "proj" / "supervisor.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as direct:
        direct.settimeout(TIMEOUT)
        direct.connect(os.fsencode(path))
        direct.sendall(encode_message({"version": 1})
                       + encode_message({"cmd": "attach", "kind": "web"}))
        assert _recv_message(direct)["ok"] is True
        assert _recv_message(direct)["ok"] is True
        with terminal(coop, ["attach"], host_workspace, wrapped=True) as term:
            wait_for(lambda: local_clients(coop) == 1, TIMEOUT, "the local client")
            assert coop("shutdown", cwd=host_workspace).returncode == 0
            term.read_until(b"[detached from session proj]")
            term.read_until(b"RC=0")
        info = supervisor_info(coop)["session"]
        assert (info["local_clients"], info["web_clients"]) == (0, 1)
        # The direct client still works and was never told it was detached.
        direct.sendall(encode_data(b"echo web-$((40+2))\r"))
        decoder = StreamDecoder()
        screen = b""
        deadline = time.monotonic() + TIMEOUT
        while b"web-42" not in screen:
            direct.settimeout(max(deadline - time.monotonic(), 0.001))
            data = direct.recv(65536)
            assert data, "the direct client was hung up on"
            for item in decoder.feed(data):
                if isinstance(item, Control):
                    assert item.message.get("event") != "detached", item
                elif isinstance(item, Data):
                    screen += item.data


def test_idle_exit_waits_for_the_last_session(coop: Coop, host_workspace: Path) -> None:
    idle = 1.0
    coop.env["COOP_DAEMON_IDLE_SECONDS"] = str(idle)
    start_detached(coop, host_workspace)
    daemon = coop.daemon_pid()
    assert daemon is not None
    # A session exists: the daemon must outlive several idle periods.
    with pytest.raises(AssertionError):
        wait_for(lambda: not pid_alive(daemon), 4 * idle, "the daemon to exit")
    assert coop.daemon_pid() == daemon
    assert coop("kill", cwd=host_workspace).returncode == 0
    wait_for(lambda: not pid_alive(daemon), TIMEOUT, "the idle daemon to exit")
    assert not (coop.coop_home / "daemon.pid").exists()
    # The next command starts a fresh daemon, which finds no session.
    assert ls_json(coop, host_workspace) == []
