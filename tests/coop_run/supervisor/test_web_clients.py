"""What a supervisor does for the web server's clients (issue 12): the input filter over a
real PTY, read-only viewers and clients that do not size the PTY, shells started without
a stream and closed, and the ``watch`` feed of its ``ls`` entry."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from sup_helpers import Start
from supervisor_client import Stream, connect, info, recv_message, request

from coop_run.inputfilter import BLOCKED_NOTICE, DEBOUNCED_NOTICE, HOLD_SECONDS
from coop_run.ipc.framing import encode_message
from coop_run.session.launch import SupervisorHandle
from support.procs import wait_for
from support.require import needs
from support.rootfs import busybox_available

pytestmark = needs(busybox_available(), "needs busybox-static")

TIMEOUT = 15.0


def size(handle: SupervisorHandle, pty: int = 0) -> tuple[int, int]:
    detail = next(d for d in info(handle.socket_path)["ptys"] if d["id"] == pty)
    return detail["cols"], detail["rows"]


def events(stream: Stream, name: str) -> list[dict[str, Any]]:
    return [e for e in stream.events if e.get("event") == name]


def test_a_web_clients_input_to_the_agent_goes_through_the_filter(start: Start) -> None:
    handle = start(block_sequences=(b"rm -rf",), ctrl_c_debounce_ms=60_000)
    web = Stream.open(handle.socket_path, kind="web", cols=80, rows=24)
    web.run("echo pa''ssed", "passed")
    # exit, one keystroke a message, never reaches the shell: a blocked event, a notice
    for key in b"exit\r":
        web.type(bytes([key]))
    blocked = web.wait_event("blocked")
    assert blocked == {"event": "blocked", "pty": 0, "sequence": "exit", "reason": "blocked",
                       "count": 1}
    notice = web.wait_event("notice")
    assert notice == {"event": "notice", "pty": 0, "text": BLOCKED_NOTICE.decode()}
    assert BLOCKED_NOTICE not in web.output  # not part of the PTY's byte stream
    web.type(b"rm -rf /x\r")  # the Coopfile's own sequence
    web.wait(lambda: len(events(web, "blocked")) == 2, "the second refusal")
    assert events(web, "blocked")[1]["sequence"] == "block_sequences[0]"
    # Ctrl+C: the first passes, the next within the window is dropped
    web.type(b"\x03")
    web.type(b"\x03")
    debounced = {"event": "notice", "pty": 0, "text": DEBOUNCED_NOTICE.decode()}
    web.wait(lambda: debounced in web.events, "the debounce's notice")
    assert events(web, "blocked")[-1] == {"event": "blocked", "pty": 0, "sequence": "ctrl-c",
                                          "reason": "debounced", "count": 1}
    # the shell is alive; what might start a sequence is held, then flushed
    mark = len(web.output)
    typed = time.monotonic()
    web.type(b"ex")
    web.wait_output(b"ex", since=mark, timeout=HOLD_SECONDS + 5)
    assert time.monotonic() - typed >= HOLD_SECONDS * 0.9  # held until the flush
    web.type(b"\x15")  # ^U: kill the line the flush typed
    web.run("echo sti''ll", "still")
    assert info(handle.socket_path)["session"]["web_clients"] == 1
    web.close()


def test_local_clients_and_shells_are_never_filtered(start: Start) -> None:
    handle = start()
    local = Stream.open(handle.socket_path, cols=80, rows=24)
    shell = Stream.open(handle.socket_path, "shell", kind="web", cols=80, rows=24)
    shell.run("echo re''ady", "ready")
    shell.type(b"exit 3\r")
    assert shell.wait_event("pty_exited")["code"] == 3
    local.type(b"exit 4\r")
    assert local.wait_event("pty_exited")["code"] == 4
    assert not events(local, "blocked") and not events(shell, "blocked")
    local.close()
    shell.close()


def test_a_read_only_client_watches_and_neither_types_nor_sizes(start: Start) -> None:
    handle = start()
    writer = Stream.open(handle.socket_path, kind="web", cols=100, rows=30)
    viewer = Stream.open(handle.socket_path, kind="web", cols=40, rows=10, read_only=True)
    phone = Stream.open(handle.socket_path, kind="web", cols=50, rows=20, sizing=False)
    assert size(handle) == (100, 30)
    # Each client's resize goes first: what it sends next, answered, proves it was read.
    viewer.control({"type": "resize", "cols": 20, "rows": 5})
    viewer.type(b"echo view''er-typed\r")
    refused = viewer.wait_event("blocked")
    assert refused == {"event": "blocked", "pty": 0, "sequence": "input",
                       "reason": "read-only", "count": 1}
    writer.run("echo wri''ter", "writer")
    viewer.wait_output(b"writer\r\n")  # it sees everything
    phone.wait_output(b"writer\r\n")
    assert b"viewer-typed" not in writer.output
    assert size(handle) == (100, 30)
    phone.control({"type": "resize", "cols": 30, "rows": 12})
    phone.run("echo pho''ne", "phone")  # it types, and still does not size
    writer.control({"type": "resize", "cols": 90, "rows": 28})
    wait_for(lambda: size(handle) == (90, 28), TIMEOUT, "the writer's resize")
    for stream in (writer, viewer, phone):
        stream.close()


def test_a_shell_started_without_a_stream_is_closed_by_its_id(start: Start) -> None:
    handle = start()
    opened = request(handle.socket_path, {"cmd": "shell", "detach": True, "cols": 70,
                                          "rows": 20})
    assert opened == {"ok": True, "pty": 1}
    assert [p["state"] for p in info(handle.socket_path)["session"]["ptys"]] == [
        "running", "running"]
    assert size(handle, 1) == (70, 20)
    shell = Stream.open(handle.socket_path, pty=1, cols=70, rows=20)
    shell.run("echo in-''shell", "in-shell")
    assert request(handle.socket_path, {"cmd": "close", "pty": 1}) == {"ok": True}
    exited = shell.wait_event("pty_exited")
    assert exited["pty"] == 1
    wait_for(lambda: info(handle.socket_path)["session"]["ptys"][1]["state"] == "exited",
             TIMEOUT, "the shell to end")
    agent = request(handle.socket_path, {"cmd": "close", "pty": 0})
    assert (agent["ok"], agent["error"]) == (False, "INVALID_COMMAND")
    missing = request(handle.socket_path, {"cmd": "close", "pty": 9})
    assert (missing["ok"], missing["error"]) == (False, "PTY_NOT_FOUND")
    shell.close()


def test_watch_sends_the_ls_entry_whenever_it_changes(start: Start) -> None:
    handle = start()
    with connect(handle.socket_path) as watcher:
        watcher.sendall(encode_message({"cmd": "watch"}))
        first = recv_message(watcher)
        assert first["event"] == "session"
        assert first["session"]["web_clients"] == 0
        assert first["session"] == info(handle.socket_path)["session"]

        def next_until(check: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
            deadline = time.monotonic() + TIMEOUT
            while time.monotonic() < deadline:
                entry: dict[str, Any] = recv_message(watcher)["session"]
                if check(entry):
                    return entry
            raise AssertionError("no such change")

        web = Stream.open(handle.socket_path, kind="web", cols=80, rows=24)
        next_until(lambda e: e["web_clients"] == 1)
        request(handle.socket_path, {"cmd": "shell", "detach": True})
        next_until(lambda e: [p["role"] for p in e["ptys"]] == ["agent", "shell"])
        web.type(b"printf '\\a'\r")
        marked = next_until(lambda e: e["ptys"][0]["attention"] is not None)
        assert marked["ptys"][0]["attention"]["reason"] == "bell"
        web.close()
        next_until(lambda e: e["web_clients"] == 0)


def test_an_idle_web_client_stops_sizing_with_no_event(start: Start) -> None:
    """The supervisor's timer, not a message, takes an idle phone out of the rule; a
    message (here ``active``) puts it back, and the timer fires again after it."""
    handle = start(web_idle=2.0)
    local = Stream.open(handle.socket_path, cols=120, rows=40)
    phone = Stream.open(handle.socket_path, kind="web", cols=40, rows=20)
    assert size(handle) == (40, 20)
    wait_for(lambda: size(handle) == (120, 40), TIMEOUT, "the idle phone to stop counting")
    phone.control({"type": "active"})
    wait_for(lambda: size(handle) == (40, 20), TIMEOUT, "the phone to count again")
    wait_for(lambda: size(handle) == (120, 40), TIMEOUT, "the phone to go idle again")
    for stream in (local, phone):
        stream.close()
