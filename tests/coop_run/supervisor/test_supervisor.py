"""The session supervisor for real: a busybox sandbox, real PTYs, real sockets.

Every supervisor a test starts is stopped at the end by PID: the ``kill`` command, then
SIGTERM/SIGKILL through the pid in its ``supervisor.json`` (and the handle's pid).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import select
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from other_uid import as_other_user, cooptest_user
from sup_helpers import Start, stop_supervisor
from supervisor_client import Stream, connect, info, recv_message, request

from coop_run.errors import SupervisorError
from coop_run.ipc.framing import encode_message
from coop_run.layout import SessionDir
from coop_run.session.config import SupervisorConfig
from coop_run.session.launch import (
    SupervisorHandle,
    failed_reply,
    parse_reply,
    started_reply,
)
from coop_run.session.process import start_supervisor
from coop_run.session.ptys import CRASH_LOOP_AFTER, Backoff, exit_notice, restart_notice
from coop_run.statefiles import read_json
from support.procs import pid_alive, wait_for
from support.require import needs
from support.rootfs import busybox_available

pytestmark = needs(busybox_available(), "needs busybox-static")

TIMEOUT = 15.0
PROMPT = 0.5  # "at once": generous on a loaded machine, far below a stop's grace


def pty_detail(handle: SupervisorHandle, pty: int = 0) -> dict[str, Any]:
    details = info(handle.socket_path)["ptys"]
    return next(d for d in details if d["id"] == pty)


def session(handle: SupervisorHandle) -> dict[str, Any]:
    entry: dict[str, Any] = info(handle.socket_path)["session"]
    return entry


# --- pure parts -------------------------------------------------------------------------


def test_backoff_doubles_then_marks_crash_looping() -> None:
    backoff = Backoff(base_ms=100, max_ms=500)
    delays = [backoff.next_delay(0.1) for _ in range(7)]
    assert delays == [100, 200, 400, 500, 500, 500, 500]
    assert backoff.crash_looping and backoff.streak == 7
    assert backoff.next_delay(5.0) == 100 and not backoff.crash_looping
    backoff = Backoff(base_ms=10, max_ms=30000)
    for _ in range(CRASH_LOOP_AFTER - 1):
        backoff.next_delay(0.0)
    assert not backoff.crash_looping
    assert backoff.next_delay(0.0) == 30000 and backoff.crash_looping


def test_notices_are_the_spec_bytes() -> None:
    assert exit_notice(3, None) == b"\r\n\x1b[2m[process exited (code 3)]\x1b[0m\r\n"
    assert exit_notice(None, 9) == b"\r\n\x1b[2m[process exited (code 137)]\x1b[0m\r\n"
    assert restart_notice(250) == b"\x1b[2m[restarting in 250ms...]\x1b[0m\r\n"


# --- with a real session ------------------------------------------------------------------


def test_start_up_replies_round_trip_and_bad_ones_are_refused() -> None:
    assert parse_reply(started_reply(4321)) == 4321
    with pytest.raises(SupervisorError, match=r"^no rootfs$"):
        parse_reply(failed_reply("no rootfs"))
    for bad in (b"", b"{", b"[]\n", b'{"pid": true}\n', b'{"pid": "7"}\n', b"{}\n"):
        with pytest.raises(SupervisorError, match="malformed start-up reply"):
            parse_reply(bad)


def test_two_clients_type_and_see_the_same_output(start: Start) -> None:
    handle = start()
    assert handle.socket_path.stat().st_mode & 0o777 == 0o600
    a = Stream.open(handle.socket_path, pty=0, cols=80, rows=24)
    out = a.run("echo h''i", "hi")
    assert b"\r\nhi\r\n" in out
    b = Stream.open(handle.socket_path, cols=80, rows=24, kind="web")
    b.wait_output(b"\r\nhi\r\n")  # the scrollback comes first
    assert b.start == 0 and b.output.startswith(bytes(a.output[: len(b.output)]))
    b.run("echo the''re", "there")
    a.wait_output(b"\r\nthere\r\n")
    entry = session(handle)
    assert (entry["local_clients"], entry["web_clients"], entry["tunnel_clients"]) == (1, 1, 0)
    assert entry["ptys"] == [{"id": 0, "role": "agent", "command": "sh", "state": "running",
                              "attention": None}]
    assert entry["state"] == "running" and entry["pid"] == handle.pid
    assert set(entry) == {"name", "workspace", "pid", "created", "state", "ptys",
                          "web_clients", "local_clients", "tunnel_clients"}
    a.close()
    b.close()


def test_resume_gets_exactly_the_missed_bytes(start: Start) -> None:
    handle = start()
    a = Stream.open(handle.socket_path, cols=80, rows=24)
    a.run("echo fir''st", "first")
    resume = a.offset
    a.close()
    b = Stream.open(handle.socket_path, cols=80, rows=24)
    b.run("echo mis''sed", "missed")
    end = pty_detail(handle)["offset"]
    b.wait(lambda: b.offset >= end, "b to reach the end")
    c = Stream.open(handle.socket_path, cols=80, rows=24, resume_from=resume)
    assert c.start == resume
    c.wait(lambda: c.offset >= end, "the resumed bytes")
    missed = bytes(c.output[: end - resume])
    assert missed == bytes(b.output[resume - b.start : end - b.start])
    assert b"\r\nmissed\r\n" in missed and b"first\r\n" not in missed
    for client in (b, c):
        client.close()


def test_size_follows_the_smallest_client(start: Start) -> None:
    handle = start()
    a = Stream.open(handle.socket_path, cols=100, rows=30)
    b = Stream.open(handle.socket_path, cols=90, rows=40)
    assert b"\r\n30 90\r\n" in a.run("stty size", "30 90")
    b.control({"type": "resize", "cols": 120, "rows": 20})
    wait_for(lambda: (pty_detail(handle)["cols"], pty_detail(handle)["rows"]) == (100, 20),
             TIMEOUT, "the resize")
    assert b"\r\n20 100\r\n" in a.run("stty size", "20 100")
    b.control({"type": "detach"})
    b.wait(lambda: b.closed, "the detach to end b's stream")
    wait_for(lambda: pty_detail(handle)["clients"] == 1, TIMEOUT, "b to be gone")
    assert b"\r\n30 100\r\n" in a.run("stty size", "30 100")
    a.close()
    b.close()


def test_a_client_that_stops_reading_lags_and_never_slows_the_other(start: Start) -> None:
    handle = start()
    slow = Stream.open(handle.socket_path, cols=80, rows=24)
    fast = Stream.open(handle.socket_path, cols=80, rows=24)
    fast.run("echo rea''dy", "ready")
    count = 700000  # about 5 MB of output
    mark = len(fast.output)
    began = time.monotonic()
    fast.type(f"seq 1 {count}; echo DO''NE\r".encode())
    fast.wait_output(b"\r\nDONE\r\n", timeout=60.0, since=mark)
    assert time.monotonic() - began < 30.0
    burst = bytes(fast.output[mark:])
    numbers = re.findall(rb"^(\d+)\r$", burst, flags=re.M)
    assert len(burst) > 5_000_000
    assert numbers == [str(n).encode() for n in range(1, count + 1)]
    assert not any(e.get("event") == "lagged" for e in fast.events)
    # Now the slow one reads: what it had lost is reported, and the program was nudged.
    lagged = slow.wait_event("lagged")
    assert lagged["bytes"] > 1_000_000 and lagged["pty"] == 0
    # busybox sh redraws its prompt line on SIGWINCH ("\r$ \x1b[J"); nobody typed.
    redraw = b"DONE\r\n$ \x1b[6n\r$ \x1b[J"
    slow.wait_output(redraw)
    fast.wait_output(redraw, since=mark)
    assert len(slow.output) < len(fast.output)
    slow.close()
    fast.close()


def attention(stream: Stream) -> list[dict[str, Any]]:
    return [e for e in stream.events if e.get("event") == "attention"]


def test_a_bell_marks_the_pty_for_every_client_until_one_types(start: Start) -> None:
    handle = start()
    a = Stream.open(handle.socket_path, cols=80, rows=24)
    b = Stream.open(handle.socket_path, cols=80, rows=24, kind="web")
    a.run("printf '\\007'; echo rang-$((40+2))", "rang-42")
    bell = {"event": "attention", "pty": 0, "active": True, "reason": "bell"}
    for client in (a, b):
        client.wait_output(b"\x07rang-42")  # the bell itself passes through
        client.wait(lambda c=client: attention(c) == [bell], "the bell's event")
    mark = session(handle)["ptys"][0]["attention"]
    assert mark["reason"] == "bell" and abs(mark["since"] - time.time()) < 60
    assert set(mark) == {"reason", "since"}
    # A client that attaches now is told at once, after the scrollback.
    c = Stream.open(handle.socket_path, cols=80, rows=24, kind="web")
    c.wait(lambda: attention(c) == [bell], "the mark on attach")
    assert c.items[-1] == bell
    # A terminal's own answer (busybox sh asks where the cursor is) is not typing: once
    # the resize sent after it has been applied, the report was read, and the mark stays.
    b.type(b"\x1b[5;1R")
    b.control({"type": "resize", "cols": 79, "rows": 24})
    wait_for(lambda: pty_detail(handle)["cols"] == 79, TIMEOUT, "b's resize")
    assert session(handle)["ptys"][0]["attention"] == mark
    a.run("echo sti''ll", "still")  # a key: cleared, for everyone
    cleared = {"event": "attention", "pty": 0, "active": False}
    for client in (a, b, c):
        client.wait(lambda c=client: attention(c)[-1:] == [cleared], "the clear")
        assert attention(client) == [bell, cleared]
    assert session(handle)["ptys"][0]["attention"] is None
    for client in (a, b, c):
        client.close()


def test_notifications_carry_their_text_and_progress_is_none(start: Start) -> None:
    handle = start()
    a = Stream.open(handle.socket_path, cols=80, rows=24)
    # ConEmu's progress (OSC 9;4) and a title are no notification, and their BEL no bell.
    a.run("printf '\\033]9;4;1;50\\007\\033]0;title\\007'; echo no-$((40+2))", "no-42")
    a.run("printf '\\033]777;notify;Build;done in 3s\\033\\\\'; echo n-$((40+2))", "n-42")
    a.wait(lambda: len(attention(a)) == 1, "the notification")
    assert attention(a) == [{"event": "attention", "pty": 0, "active": True,
                             "reason": "notification", "text": "Build: done in 3s"}]
    assert session(handle)["ptys"][0]["attention"]["text"] == "Build: done in 3s"
    # Typing the next command clears it; its OSC 9 marks the PTY again.
    a.run("printf '\\033]9;Tests: 12 passed\\033\\\\'; echo m-$((40+2))", "m-42")
    a.wait(lambda: len(attention(a)) == 3, "the second notification")
    assert [(e["active"], e.get("text")) for e in attention(a)] == [
        (True, "Build: done in 3s"), (False, None), (True, "Tests: 12 passed")]
    a.close()


def test_silence_after_a_burst_marks_the_pty(start: Start) -> None:
    handle = start(silence_burst=2000, silence_after=0.3)
    a = Stream.open(handle.socket_path, cols=80, rows=24)
    a.run("seq 1 1000; echo do''ne", "done")  # about 4 KB, then the prompt, then quiet
    silence = {"event": "attention", "pty": 0, "active": True, "reason": "silence"}
    a.wait(lambda: attention(a) == [silence], "the silence")
    assert a.items[-1] == silence  # after all the output, the prompt included
    assert session(handle)["ptys"][0]["attention"]["reason"] == "silence"
    a.type(b"\x15")  # Ctrl+U: a key, no command
    a.wait(lambda: attention(a)[-1]["active"] is False, "the clear")
    assert session(handle)["ptys"][0]["attention"] is None
    a.close()


def test_agent_exit_is_announced_and_the_agent_restarted(start: Start) -> None:
    handle = start(restart_delay_ms=50)
    before = pty_detail(handle)
    a = Stream.open(handle.socket_path, cols=80, rows=24)
    a.type(b"exit 3\r")
    exited = a.wait_event("pty_exited")
    assert exited == {"event": "pty_exited", "pty": 0, "code": 3, "signal": None}
    restarting = a.wait_event("pty_restarting")
    assert restarting["pty"] == 0 and restarting["delay"] == 0.05
    a.wait_output(b"\x1b[2m[process exited (code 3)]\x1b[0m\r\n"
                  b"\x1b[2m[restarting in 50ms...]\x1b[0m\r\n")
    wait_for(lambda: pty_detail(handle)["host_pid"] not in (None, before["host_pid"]),
             TIMEOUT, "the new agent")
    assert b"\r\nback\r\n" in a.run("echo ba''ck", "back")  # still attached
    after = pty_detail(handle)
    assert after["id"] == 0 and after["host_pid"] != before["host_pid"]
    assert session(handle)["ptys"][0]["state"] == "running"
    a.close()


def test_restart_command_starts_a_new_agent(start: Start) -> None:
    handle = start()
    before = pty_detail(handle)["host_pid"]
    assert request(handle.socket_path, {"cmd": "restart"}) == {"ok": True, "pty": 0}
    wait_for(lambda: pty_detail(handle)["host_pid"] not in (None, before), TIMEOUT,
             "the restarted agent")


def test_a_crashing_agent_is_backed_off_and_marked(start: Start) -> None:
    handle = start(agent=("false",), restart_delay_ms=10, restart_max_delay_ms=80)
    a = Stream.open(handle.socket_path, cols=80, rows=24)
    wait_for(lambda: session(handle)["state"] == "crash-looping", TIMEOUT, "crash-looping")
    assert session(handle)["ptys"][0]["state"] == "crash-looping"
    a.wait(lambda: sum(e.get("event") == "pty_restarting" for e in a.events) >= 3,
           "more restarts")
    delays = [e["delay"] for e in a.events if e.get("event") == "pty_restarting"]
    assert delays[-2:] == [0.08, 0.08]  # still retrying, at the maximum delay
    codes = {e["code"] for e in a.events if e.get("event") == "pty_exited"}
    assert codes == {1}
    a.close()


def test_crash_looping_clears_once_the_agent_stays_up(start: Start) -> None:
    handle = start(restart_delay_ms=10, restart_max_delay_ms=50)
    a = Stream.open(handle.socket_path, cols=80, rows=24)
    for attempt in range(1, CRASH_LOOP_AFTER + 1):
        wait_for(lambda: pty_detail(handle)["pid"] is not None, TIMEOUT, "the agent to run")
        a.type(b"exit\r")
        a.wait(lambda n=attempt: sum(e.get("event") == "pty_exited" for e in a.events) >= n,
               f"exit {attempt}")
    assert session(handle)["state"] == "crash-looping"
    # The agent now stays up: after QUICK_EXIT seconds of running it is no longer marked.
    wait_for(lambda: session(handle)["state"] == "running", TIMEOUT, "the loop to clear")
    assert session(handle)["ptys"][0]["state"] == "running"
    a.close()


def test_shell_shares_the_sandbox_and_is_not_restarted(start: Start) -> None:
    handle = start()
    agent_pid = pty_detail(handle)["pid"]
    shell = Stream.open(handle.socket_path, "shell", cols=80, rows=24)
    assert shell.response["pty"] == 1
    out = shell.run(f"test -d /proc/{agent_pid} && cat /proc/{agent_pid}/comm && echo SA''ME",
                    "SAME")
    assert b"\r\nsh\r\n" in out
    assert [p["role"] for p in session(handle)["ptys"]] == ["agent", "shell"]
    shell.type(b"exit 4\r")
    exited = shell.wait_event("pty_exited")
    assert exited["pty"] == 1 and exited["code"] == 4
    assert not any(e.get("event") == "pty_restarting" for e in shell.events)
    wait_for(lambda: session(handle)["ptys"][1]["state"] == "exited", TIMEOUT, "exited")
    assert pty_detail(handle, 1)["pid"] is None
    with_command = Stream.open(handle.socket_path, "shell", command="echo o''ne-shot",
                               cols=80, rows=24)
    assert with_command.response["pty"] == 2
    with_command.wait_output(b"one-shot\r\n")
    assert with_command.wait_event("pty_exited")["code"] == 0
    shell.close()
    with_command.close()


def test_kill_stops_everything_and_keeps_persist(start: Start) -> None:
    handle = start()
    session_dir = handle.state_path.parent
    agent = pty_detail(handle)["host_pid"]
    assert (session_dir / "persist" / ".cache").is_dir()
    assert (session_dir / "upper").exists()
    assert read_json(SessionDir(session_dir).supervisor_state) is not None
    a = Stream.open(handle.socket_path, cols=80, rows=24)
    idle = connect(handle.socket_path)  # an idle command connection must not hold the exit
    idle.settimeout(TIMEOUT)
    assert request(handle.socket_path, {"cmd": "kill"}) == {"ok": True}
    a.wait_event("detached")
    a.wait(lambda: a.closed, "the stream to end")
    wait_for(lambda: not pid_alive(handle.pid), TIMEOUT, "the supervisor to exit")
    assert agent is not None and not pid_alive(agent)
    assert not handle.socket_path.exists() and not handle.state_path.exists()
    assert not (session_dir / "upper").exists() and not (session_dir / "work").exists()
    assert (session_dir / "persist" / ".cache").is_dir()
    assert idle.recv(1) == b""
    idle.close()
    a.close()


def test_a_slow_stop_leaves_the_session_answering(start: Start) -> None:
    """The stop waits out its grace in a worker thread: meanwhile ``info`` says "stopping",
    an attached shell answers what is typed, a new shell is refused, all at once."""
    grace = 5.0
    ignores = "trap '' HUP TERM;"  # neither the hang-up nor SIGTERM ends these
    handle = start(agent=("sh", "-c", f"{ignores} exec sleep 1000"), stop_grace=grace)
    shell = Stream.open(handle.socket_path, "shell", cols=80, rows=24,
                        command=f'{ignores} while read -r line; do echo "got $line"; done')
    shell.run("ready", "got ready")
    killer = connect(handle.socket_path)
    began = time.monotonic()
    killer.sendall(encode_message({"cmd": "kill"}))
    wait_for(lambda: session(handle)["state"] == "stopping", TIMEOUT, "the stop to begin")
    for attempt in range(3):
        asked = time.monotonic()
        assert session(handle)["state"] == "stopping"
        assert time.monotonic() - asked < PROMPT
        typed = time.monotonic()
        shell.run(f"round{attempt}", f"got round{attempt}")
        assert time.monotonic() - typed < PROMPT
    refused = time.monotonic()
    assert request(handle.socket_path, {"cmd": "shell"})["error"] == "SESSION_NOT_FOUND"
    assert time.monotonic() - refused < PROMPT
    # All of the above happened while the stop was still waiting: the kill is unanswered.
    assert select.select([killer], [], [], 0)[0] == []
    assert recv_message(killer, grace + TIMEOUT) == {"ok": True}
    assert time.monotonic() - began >= grace
    shell.wait_event("detached")
    wait_for(lambda: not pid_alive(handle.pid), TIMEOUT, "the supervisor to exit")
    killer.close()
    shell.close()


def test_a_shell_that_exits_at_once_reports_its_exit(start: Start) -> None:
    """The exit may reach the loop before the spawn's answer does (another thread read
    both): it is kept for the PTY, and its client still gets the event."""
    handle = start()
    for code in range(1, 21):
        stream = Stream.open(handle.socket_path, "shell", command=f"exit {code}",
                             cols=80, rows=24)
        assert stream.wait_event("pty_exited")["code"] == code
        stream.close()


def test_adopt_serves_a_passed_client(start: Start) -> None:
    handle = start()
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with connect(handle.socket_path) as control:
        message = encode_message({"cmd": "adopt", "request": {"cmd": "attach", "pty": 0,
                                                             "cols": 70, "rows": 20}})
        socket.send_fds(control, [message], [theirs.fileno()])
        theirs.close()
        assert recv_message(control) == {"ok": True}
        stream = Stream(ours, recv_message(ours))
        assert stream.response["pty"] == 0
        assert b"\r\nadopted\r\n" in stream.run("echo adop''ted", "adopted")
        # Without a descriptor, adopt is refused and the connection keeps serving.
        control.sendall(encode_message({"cmd": "adopt", "request": {"cmd": "attach"}}))
        assert recv_message(control)["error"] == "INVALID_COMMAND"
        control.sendall(encode_message({"cmd": "info"}))
        assert recv_message(control)["ok"] is True
    stream.close()


def test_start_from_a_running_event_loop(
        make_config: Callable[..., SupervisorConfig]) -> None:
    """The daemon starts supervisors from inside its asyncio loop (signal handlers set)."""
    handles: list[SupervisorHandle] = []

    async def daemon_like() -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGUSR1, lambda: None)
        try:
            handles.append(start_supervisor(make_config()))
        finally:
            loop.remove_signal_handler(signal.SIGUSR1)

    try:
        asyncio.run(daemon_like())
        assert session(handles[0])["state"] == "running"
    finally:
        for handle in handles:
            stop_supervisor(handle)


def test_handshake_and_errors(start: Start) -> None:
    handle = start()
    with connect(handle.socket_path, hello=False) as sock:
        sock.sendall(encode_message({"version": 2}))
        assert recv_message(sock)["error"] == "VERSION_MISMATCH"
    assert request(handle.socket_path, {"cmd": "attach", "pty": 7})["error"] == "PTY_NOT_FOUND"
    assert request(handle.socket_path, {"cmd": "frobnicate"})["error"] == "INVALID_COMMAND"
    assert session(handle)["state"] == "running"


@pytest.mark.rootonly
def test_a_connection_from_another_uid_is_dropped(start: Start) -> None:
    """Even with the socket opened up by mistake, another uid gets no answer at all."""
    user = cooptest_user()
    handle = start()
    session_dir = handle.socket_path.parent
    session_dir.chmod(0o711)  # only so that the kernel lets the other user connect
    handle.socket_path.chmod(0o666)
    dir_fd = os.open(session_dir, os.O_PATH)

    def connect_as_other() -> bytes:
        other = connect(Path(f"/proc/self/fd/{dir_fd}/supervisor.sock"), hello=False)
        other.settimeout(TIMEOUT)
        try:
            other.sendall(encode_message({"version": 1}))
            got = other.recv(65536)  # b"" when dropped without a reply
        except (ConnectionResetError, BrokenPipeError):
            got = b""
        return b"dropped" if got == b"" else b"answered:" + got[:50]

    try:
        verdict = as_other_user(user, connect_as_other)
    finally:
        os.close(dir_fd)
    assert verdict == "dropped", verdict
    assert session(handle)["state"] == "running"  # and it serves us as before


def test_the_supervisor_outlives_its_starter(
        make_config: Callable[..., SupervisorConfig]) -> None:
    config = make_config()
    read_fd, write_fd = os.pipe()
    helper = os.fork()
    if helper == 0:  # pragma: no cover - the helper process
        try:
            os.close(read_fd)
            started = start_supervisor(config)
            os.write(write_fd, f"{started.pid}\n".encode())
            os.read(os.open(os.devnull, os.O_RDONLY), 1)
            signal.pause()
        finally:
            os._exit(1)
    os.close(write_fd)
    handle: SupervisorHandle | None = None
    try:
        with os.fdopen(read_fd) as reply:
            line = reply.readline()
        assert line, "the helper failed to start the supervisor"
        sdir = SessionDir(config.session_dir)
        handle = SupervisorHandle(int(line), sdir.supervisor_socket, sdir.supervisor_state)
        agent = pty_detail(handle)["host_pid"]
        os.kill(helper, signal.SIGKILL)
        os.waitpid(helper, 0)
        assert not pid_alive(helper)
        entry = session(handle)
        assert entry["pid"] == handle.pid and entry["state"] == "running"
        assert pty_detail(handle)["host_pid"] == agent and pid_alive(agent)
    finally:
        with contextlib.suppress(ChildProcessError, ProcessLookupError):
            os.kill(helper, signal.SIGKILL)
            os.waitpid(helper, 0)
        if handle is not None:
            stop_supervisor(handle)
