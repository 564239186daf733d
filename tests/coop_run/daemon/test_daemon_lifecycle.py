"""The daemon's life through the real CLI: start on demand, once; stale socket; exits."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from coop_cli import coop_pids, read_pid
from daemon_support import Coop, daemon_pids, zygote_pids

from coop_run.daemon.server import IDLE_SECONDS, Activity, idle_timeout, should_exit_idle
from support.procs import pid_alive, proc_info, wait_for

SEED_HEADER = "SESSION    WORKSPACE                STATE     PTYS   CLIENTS        AGE"


def test_ls_starts_a_daemon_and_prints_the_header(coop: Coop) -> None:
    assert not coop.socket.exists()
    result = coop("ls")
    assert result.returncode == 0, result
    assert result.stdout == SEED_HEADER + "\n"
    pid = read_pid(coop.coop_home)
    assert pid is not None and pid_alive(pid)
    assert daemon_pids(coop.coop_home) == [pid]
    # The daemon is nobody's child here: double fork, re-parented away from coop.
    assert _ppid(pid) != os.getpid()
    # Its session starter (zygote) is its child; the zygote's spare and that spare's
    # waiting init hang below it.
    assert [z for z in _starter(coop) if _ppid(z) == pid] != []
    again = coop("ls", "--json")
    assert again.returncode == 0, again
    assert again.stdout.strip() == "[]"
    assert read_pid(coop.coop_home) == pid


def test_twenty_concurrent_commands_start_exactly_one_daemon(coop: Coop) -> None:
    procs = [coop.popen("ls", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for _ in range(20)]
    outputs = [proc.communicate(timeout=60) for proc in procs]
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
        assert out == SEED_HEADER + "\n"
    pids = daemon_pids(coop.coop_home)
    assert len(pids) == 1, pids
    assert read_pid(coop.coop_home) == pids[0]
    assert coop.log.read_text().count("listening on") == 1
    assert [z for z in zygote_pids(coop.coop_home) if _ppid(z) == pids[0]] != []
    assert coop.log.read_text().count("session starter (zygote) started") == 1


def test_stale_socket_file_is_replaced(coop: Coop) -> None:
    coop.coop_home.mkdir(mode=0o700)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(coop.socket))
    stale.close()  # the file stays, nobody listens: connect is refused
    result = coop("ls")
    assert result.returncode == 0, result
    assert "removing stale socket" in coop.log.read_text()
    from ipc_helpers import RawClient

    with RawClient(coop.socket) as client:  # a listener now, and the daemon's
        client.hello()
        assert client.request({"cmd": "status"})["pid"] == read_pid(coop.coop_home)


def test_symlinked_socket_path_is_refused(coop: Coop, tmp_path: Path) -> None:
    coop.coop_home.mkdir(mode=0o700)
    target = tmp_path / "elsewhere.sock"
    coop.socket.symlink_to(target)
    result = coop("ls")
    assert result.returncode == 4, result
    assert "symlink" in result.stderr
    assert len(result.stderr.strip().splitlines()) <= 12
    assert "Traceback" not in result.stderr
    assert not target.exists()
    assert coop_pids(coop.coop_home) == []


def test_daemon_that_cannot_start_exits_4_with_the_log_end(coop: Coop, tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    start = time.monotonic()
    result = coop("--socket", str(not_a_dir / "sock"), "ls")
    assert result.returncode == 4, result
    assert time.monotonic() - start < 10  # failure seen when the daemon died, not at a timeout
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("error: daemon failed to start"), result
    assert "daemon.log" in lines[0]
    assert any("is not a directory" in line for line in lines[1:]), result
    assert "Traceback" not in result.stderr
    # The failed daemon closes its end of the ready pipe just before its interpreter exits.
    wait_for(lambda: coop_pids(coop.coop_home) == [], 5.0, "the failed daemon to be gone")


def _starter(coop: Coop) -> list[int]:
    """The daemon's zygote, its spare and the spare's coop-init, once all three run."""
    def three() -> list[int] | None:
        found = zygote_pids(coop.coop_home)
        return found if len(found) == 3 else None

    return wait_for(three, 10.0, "zygote, spare and init")


def test_sigterm_removes_socket_and_pid_file(coop: Coop, daemon: int) -> None:
    starter = _starter(coop)
    os.kill(daemon, signal.SIGTERM)
    wait_for(lambda: not pid_alive(daemon), 10.0, "daemon exit after SIGTERM")
    assert not coop.socket.exists()
    assert not coop.pid_file.exists()
    assert "shutting down: SIGTERM" in coop.log.read_text()
    # The zygote, its spare and that spare's init went with it, before it exited.
    assert [p for p in starter if pid_alive(p)] == []
    assert coop_pids(coop.coop_home) == []


def test_shutdown_command(coop: Coop, daemon: int) -> None:
    starter = _starter(coop)
    result = coop("shutdown")
    assert result.returncode == 0, result
    assert result.stdout == f"daemon stopped (PID {daemon})\n"
    # The command returns once the daemon removed its files; the process ends right after.
    assert not coop.socket.exists()
    assert not coop.pid_file.exists()
    wait_for(lambda: not pid_alive(daemon), 10.0, "daemon exit after shutdown")
    assert [p for p in starter if pid_alive(p)] == []
    again = coop("shutdown")
    assert again.returncode == 0, again
    assert again.stdout == "no daemon running\n"
    assert coop_pids(coop.coop_home) == []  # shutdown never starts a daemon


def test_idle_exit(coop: Coop) -> None:
    result = coop("ls", env={"COOP_DAEMON_IDLE_SECONDS": "0.5"})
    assert result.returncode == 0, result
    pid = wait_for(lambda: read_pid(coop.coop_home), 5.0, "daemon.pid")
    wait_for(lambda: not pid_alive(pid), 15.0, "the idle daemon to exit")
    assert not coop.socket.exists()
    assert not coop.pid_file.exists()
    assert "idle for 0.5s" in coop.log.read_text()


def test_a_connected_client_keeps_the_daemon_alive(coop: Coop) -> None:
    """A client connected for twice the idle timeout keeps the daemon up; once it leaves,
    the daemon idles out.

    The order is forced, not raced: the daemon's ready byte goes to a pipe the test filled,
    so the daemon blocks between listening and starting its idle clock until the test,
    already connected (and greeted in the socket's buffer), drains the pipe. The daemon
    is never idle before the client is there, however slow the machine.
    """
    from ipc_helpers import RawClient

    from coop_build.paths import CoopPaths
    from coop_run.daemon.autospawn import daemon_argv, prepare_home

    prepare_home(CoopPaths(coop.coop_home))
    read_fd, write_fd = os.pipe()
    try:
        os.set_blocking(write_fd, False)
        filled = 0
        with contextlib.suppress(BlockingIOError):
            while True:
                filled += os.write(write_fd, b"x" * 65536)
        os.set_blocking(write_fd, True)  # the daemon's one-byte write now blocks
        with coop.log.open("ab") as log:
            detaching = subprocess.Popen(
                daemon_argv(coop.socket, write_fd), stdin=subprocess.DEVNULL, stdout=log,
                stderr=log, pass_fds=(write_fd,), start_new_session=True, cwd="/",
                env={**coop.env, "COOP_DAEMON_IDLE_SECONDS": "1"})
        assert detaching.wait(timeout=60) == 0
        os.close(write_fd)
        write_fd = -1
        # Logged once the socket listens, right before the daemon writes its ready byte.
        wait_for(lambda: "listening on" in coop.log.read_text(), 30.0, "the daemon to listen")
        with RawClient(coop.socket) as client:
            client.send({"version": 1})  # waits in the socket until the daemon runs on
            drained = bytearray()
            os.set_blocking(read_fd, False)

            def drain() -> bool:
                with contextlib.suppress(BlockingIOError):
                    while len(drained) <= filled and (chunk := os.read(read_fd, 65536)):
                        drained.extend(chunk)
                return len(drained) > filled

            wait_for(drain, 30.0, "the daemon's ready byte behind the filler")
            assert drained == b"x" * filled + b"1"
            pid = read_pid(coop.coop_home)
            assert pid is not None and pid_alive(pid)
            assert client.receive() == {"version": 1, "ok": True}
            start = time.monotonic()
            # Answers for twice the idle timeout prove the connection keeps the daemon up.
            while time.monotonic() - start < 2.0:
                assert client.request({"cmd": "status"})["clients"] == 1
            assert pid_alive(pid)
    finally:
        os.close(read_fd)
        if write_fd >= 0:
            os.close(write_fd)
    wait_for(lambda: not pid_alive(pid), 15.0, "the idle exit once the client left")
    assert "idle for 1s" in coop.log.read_text()


def test_status_reports_without_starting_a_daemon(coop: Coop) -> None:
    result = coop("status")
    assert result.returncode == 0, result
    assert result.stdout.splitlines()[0] == "Daemon:     not running"
    assert "Sessions:   0 running" in result.stdout
    assert coop_pids(coop.coop_home) == []
    assert not coop.socket.exists()


def test_status_asks_the_running_daemon(coop: Coop, daemon: int) -> None:
    result = coop("status")
    assert result.returncode == 0, result
    assert result.stdout.splitlines()[0] == f"Daemon:     running (PID {daemon})"


def test_logs(coop: Coop) -> None:
    result = coop("logs")
    assert result.returncode == 0, result
    assert result.stdout.startswith("no daemon log yet")
    coop.log.parent.mkdir(parents=True)
    coop.log.write_text("".join(f"line {i}\n" for i in range(100)))
    assert coop("logs").stdout == "".join(f"line {i}\n" for i in range(50, 100))
    assert coop("logs", "-n", "2").stdout == "line 98\nline 99\n"
    assert coop("logs", "-n", "0").stdout == ""
    assert coop("logs", "-n", "x").returncode == 2
    assert coop_pids(coop.coop_home) == []


def test_logs_follow_until_interrupted(coop: Coop, tmp_path: Path) -> None:
    coop.log.parent.mkdir(parents=True)
    coop.log.write_text("first\n")
    out = tmp_path / "out"
    with out.open("w") as fh:
        proc = coop.popen("logs", "-f", "-n", "1", stdout=fh, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: out.read_text() == "first\n", 10.0, "the tail")
        with coop.log.open("a") as log:
            log.write("second\npart")
        wait_for(lambda: out.read_text() == "first\nsecond\n", 10.0, "the followed line")
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=10)
        assert proc.returncode == 130, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# --- the idle decision, without a daemon -------------------------------------------------

def test_idle_decision() -> None:
    idle = Activity(sessions=0, clients=0, web_server=False, tunnels=0)
    assert idle.idle
    for busy in (Activity(1, 0, False, 0), Activity(0, 1, False, 0), Activity(0, 0, True, 0),
                 Activity(0, 0, False, 1)):
        assert not busy.idle
        assert not should_exit_idle(busy, 0.0, 1000.0, 30.0)
    assert not should_exit_idle(idle, 100.0, 129.9, 30.0)
    assert should_exit_idle(idle, 100.0, 130.0, 30.0)
    assert not should_exit_idle(idle, None, 1000.0, 30.0)


def test_idle_timeout_setting() -> None:
    assert IDLE_SECONDS == 30.0
    assert idle_timeout({}) == 30.0
    assert idle_timeout({"COOP_DAEMON_IDLE_SECONDS": "0.5"}) == 0.5
    for bad in ("", "abc", "0", "-1", "nan", "inf"):
        assert idle_timeout({"COOP_DAEMON_IDLE_SECONDS": bad}) == 30.0


def test_client_refuses_a_symlink_to_a_live_socket(coop: Coop, daemon: int,
                                                   tmp_path: Path) -> None:
    link = tmp_path / "link.sock"
    link.symlink_to(coop.socket)
    result = coop("--socket", str(link), "ls")
    assert result.returncode == 4, result
    assert result.stderr == f"error: socket path {link} is a symlink; refusing to use it\n"


def test_after_kill_9_status_says_not_running_and_ls_starts_a_new_one(
        coop: Coop, daemon: int) -> None:
    os.kill(daemon, signal.SIGKILL)
    wait_for(lambda: not pid_alive(daemon), 10.0, "the killed daemon to be gone")
    assert coop.socket.exists() and coop.pid_file.exists()  # left behind by kill -9
    status = coop("status")
    assert status.stdout.splitlines()[0] == "Daemon:     not running", status
    assert coop("ls").returncode == 0
    new = read_pid(coop.coop_home)
    assert new is not None and new != daemon and pid_alive(new)
    assert coop("status").stdout.splitlines()[0] == f"Daemon:     running (PID {new})"


def test_unusable_coop_home_exits_4(coop: Coop, tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    result = coop("ls", env={"COOP_HOME": str(blocker / "coop")})
    assert result.returncode == 4, result
    assert result.stderr.startswith("error: daemon failed to start: cannot create"), result
    assert len(result.stderr.splitlines()) == 1


def _ppid(pid: int) -> int | None:
    info = proc_info(pid)
    return None if info is None else info.ppid
