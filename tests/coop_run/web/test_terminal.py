"""A PTY's WebSocket through the real daemon and supervisor (SPEC 6, 7.3, 8): bytes both
ways, ``coop ls`` counting web clients, resume after the connection is cut mid-burst
(no gap, no duplicate) or a redraw when the scrollback no longer holds the gap, a paused
or slow browser losing its backlog without slowing anyone, coalesced frames, the
heartbeat finding a dead phone, the input filter over a real PTY, read-only viewers, and
a kill reaching the browser as ``detached``."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import aiohttp
from web_support import Coop, Served, Terminal, client_session, run, serve_session

from coop_run.inputfilter import BLOCKED_NOTICE
from support.procs import wait_for

TIMEOUT = 20.0
COUNT = 30000  # 229 KB of "n1\r\nn2\r\n...": less than a PTY's 256 KiB scrollback
COUNTER = f"i=0; while [ $i -lt {COUNT} ]; do i=$((i+1)); echo n$i; done; echo DO''NE"
SEQ_100000 = sum(len(str(n)) + 2 for n in range(1, 100001))  # its bytes on a terminal


def numbers(output: bytes) -> list[int]:
    """The counted lines ``nN`` (a prompt may share the first one's line: the shell
    prints it while the terminal already echoes what was typed)."""
    return [int(n) for n in re.findall(rb"n(\d+)\r\n", output)]


def ls_json(served: Served) -> list[dict[str, Any]]:
    result = served.coop("ls", "--json")
    assert result.returncode == 0, result
    sessions: list[dict[str, Any]] = json.loads(result.stdout)
    return sessions


def test_bytes_flow_both_ways_and_ls_counts_web_clients(served: Served) -> None:
    links = served.links

    async def check() -> None:
        async with client_session() as session:
            one = await Terminal.open(session, links.base, links.token, cols=90, rows=30)
            assert one.attached == {"event": "attached", "pty": 0, "offset": 0, "cols": 90,
                                    "rows": 30, "session": "proj", "read_only": False}
            out = await one.run("stty size; echo $((6*7))", "42")
            assert b"\r\n30 90\r\n" in out
            two = await Terminal.open(session, links.base, links.token)
            await two.wait_output(b"42\r\n")  # the scrollback first, then live output
            await two.run("echo fr''om-two", "from-two")
            await one.wait_output(b"from-two\r\n")
            listing = await asyncio.to_thread(served.coop, "ls")
            assert re.search(r"^proj .* 2 web\s", listing.stdout, flags=re.M), listing
            await one.ws.close()
            await asyncio.to_thread(wait_for, lambda: ls_json(served)[0]["web_clients"] == 1,
                                    TIMEOUT, "one web client to be left")
            await two.ws.close()

    run(check())


def test_a_cut_connection_resumes_with_exactly_the_missed_bytes(served: Served) -> None:
    links = served.links

    async def check() -> None:
        async with client_session() as session:
            phone = await Terminal.open(session, links.base, links.token)
            await phone.run("echo rea''dy", "ready")
            start = len(phone.output)
            await phone.type(COUNTER.encode() + b"\r")
            await phone.wait(lambda: len(phone.output) - start > 20_000, "the burst")
            left_at = phone.offset
            phone.cut()  # the Wi-Fi drops in the middle of the burst
        async with client_session() as session:
            back = await Terminal.open(session, links.base, links.token, offset=left_at)
            assert back.attached["offset"] == left_at
            await back.wait_output(b"\r\nDONE\r\n", timeout=60.0)
            assert not back.events_named("lagged")
            whole = bytes(phone.output) + bytes(back.output)
            assert numbers(whole[start:]) == list(range(1, COUNT + 1))  # no gap, no twice
            await back.ws.close()

    run(check())


def test_a_gap_the_scrollback_lost_is_a_lag_and_a_redraw(served: Served) -> None:
    links = served.links

    async def check() -> None:
        async with client_session() as session:
            phone = await Terminal.open(session, links.base, links.token)
            await phone.run("echo rea''dy", "ready")
            left_at = phone.offset
            await phone.ws.close()
            desk = await Terminal.open(session, links.base, links.token)
            await desk.run("seq 1 100000; echo DO''NE", "DONE")  # past the 256 KiB ring
            back = await Terminal.open(session, links.base, links.token, offset=left_at)
            lagged = await back.wait_event("lagged")
            assert lagged["pty"] == 0 and lagged["bytes"] > SEQ_100000 > 256 * 1024
            assert back.offset == back.attached["offset"] + lagged["bytes"]
            await back.run("echo af''ter", "after")
            for terminal in (desk, back):
                await terminal.ws.close()

    run(check())


def test_a_paused_browser_lags_alone_and_gets_coalesced_frames(served: Served) -> None:
    """xterm.js says pause when it falls behind: nothing is sent to it until resume, its
    backlog is dropped past the limit (lagged, redraw) like a slow local client's, and
    the PTY and the other clients never wait. What piled up arrives in large frames."""
    links = served.links

    async def check() -> None:
        async with client_session() as session:
            desk = await Terminal.open(session, links.base, links.token)
            phone = await Terminal.open(session, links.base, links.token)
            await desk.run("echo rea''dy", "ready")
            await phone.wait_output(b"ready\r\n")
            # a small pile-up: no loss, and it comes in few large frames
            await phone.control({"type": "pause"})
            mark, frames = len(desk.output), len(phone.frames)
            await desk.run("seq -f n%.0f 1 40000; echo DO''NE", "DONE")  # 280 KB, many reads
            await phone.control({"type": "resume"})
            await phone.wait_output(b"\r\nDONE\r\n")
            assert not phone.events_named("lagged")
            piled = phone.frames[frames:]
            assert sum(piled) >= 280_000 and len(piled) <= 12, piled
            assert len(desk.frames) - len(piled) > len(piled)
            # a large one: its backlog goes, the other client gets every byte at once
            await phone.control({"type": "pause"})
            mark = len(desk.output)
            await desk.run("seq -f n%.0f 1 600000; echo DO''NE", "DONE")  # 5.2 MB
            burst = bytes(desk.output[mark:])
            assert numbers(burst) == list(range(1, 600001))
            assert not desk.events_named("lagged")
            await phone.control({"type": "resume"})
            lagged = await phone.wait_event("lagged")
            assert lagged["bytes"] > 2_000_000
            await phone.run("echo ba''ck", "back")  # typing works again at once
            for terminal in (desk, phone):
                await terminal.ws.close()

    run(check())


def test_the_heartbeat_finds_a_dead_phone(coop: Coop) -> None:
    """A phone that went to sleep answers no ping: its socket is dropped and it stops
    counting as a client (here within seconds: this daemon's heartbeat is 1 s; in use it
    is 15 s, so within 30 s at most), while a live client stays."""
    coop.env["COOP_WEB_HEARTBEAT_SECONDS"] = "1"
    served = serve_session(coop)
    links = served.links

    async def check() -> None:
        async with client_session() as session:
            live = await Terminal.open(session, links.base, links.token)
            asleep = await session.ws_connect(f"{links.base}/ws", autoping=False,
                                              params={"session": "proj",
                                                      "token": links.token})
            await asyncio.to_thread(wait_for, lambda: ls_json(served)[0]["web_clients"] == 2,
                                    TIMEOUT, "both clients")
            keep_reading = asyncio.get_running_loop().create_task(
                live.wait(lambda: False, "never", timeout=60.0))
            try:
                await asyncio.to_thread(
                    wait_for, lambda: ls_json(served)[0]["web_clients"] == 1, TIMEOUT,
                    "the sleeping phone to be dropped")
                assert not keep_reading.done()  # the live one is still there
            finally:
                keep_reading.cancel()
                await asyncio.gather(keep_reading, return_exceptions=True)
            await live.run("echo sti''ll", "still")
            await asleep.close()
            await live.ws.close()

    run(check())
    log = (served.coop.coop_home / "logs" / "daemon.log").read_text()
    assert re.search(r"web client \d+ \(127\.0\.0\.1, writable\): proj pty 0 left", log)


def test_web_input_to_the_agent_goes_through_the_filter(served: Served) -> None:
    links = served.links

    async def check() -> None:
        async with client_session() as session:
            phone = await Terminal.open(session, links.base, links.token)
            for key in b"exit\r":  # a keystroke per message, as a browser sends them
                await phone.type(bytes([key]))
            assert await phone.wait_event("blocked") == {
                "event": "blocked", "pty": 0, "sequence": "exit", "reason": "blocked",
                "count": 1}
            assert (await phone.wait_event("notice"))["text"] == BLOCKED_NOTICE.decode()
            for key in b"\x04":
                await phone.type(bytes([key]))
            await phone.wait(lambda: len(phone.events_named("blocked")) == 2, "ctrl-d")
            assert phone.events_named("blocked")[1]["sequence"] == "ctrl-d"
            await phone.run("echo st''ill-here", "still-here")  # the agent never exited
            assert ls_json(served)[0]["ptys"][0]["state"] == "running"
            # a shell opened from the web is the user's own: not filtered
            async with session.post(f"{links.base}/api/sessions/proj/shell",
                                    headers={"Authorization": "Bearer " + links.token},
                                    json={}) as response:
                pty = (await response.json())["pty"]
            shell = await Terminal.open(session, links.base, links.token, pty=pty)
            await shell.run("echo in-''shell", "in-shell")
            await shell.type(b"exit 3\r")
            exited = await shell.wait_event("pty_exited")
            assert (exited["pty"], exited["code"]) == (pty, 3)
            await phone.ws.close()

    run(check())


def test_a_read_only_viewer_sees_everything_and_changes_nothing(served: Served) -> None:
    links = served.links

    async def check() -> None:
        async with client_session() as session:
            desk = await Terminal.open(session, links.base, links.token, cols=100, rows=30)
            viewer = await Terminal.open(session, links.base, links.read_only_token,
                                         cols=20, rows=5)
            assert viewer.attached["read_only"] is True
            await viewer.type(b"echo vie''wer-typed\r")
            refused = await viewer.wait_event("blocked")
            assert (refused["sequence"], refused["reason"]) == ("input", "read-only")
            await viewer.control({"type": "resize", "cols": 10, "rows": 3})
            out = await desk.run("stty size; echo de''sk", "desk")
            assert b"\r\n30 100\r\n" in out  # the viewer never sized the PTY
            await viewer.wait_output(b"desk\r\n")
            assert b"viewer-typed" not in desk.output
            # a phone that asks not to size the PTY types but keeps the desk's size
            phone = await Terminal.open(session, links.base, links.token, cols=40,
                                        rows=12, size=0)
            assert b"\r\n30 100\r\n" in await phone.run("stty size; echo ph''one", "phone")
            for terminal in (desk, viewer, phone):
                await terminal.ws.close()

    run(check())


def test_bad_requests_and_a_kill_reach_the_browser(served: Served) -> None:
    links = served.links

    async def check() -> None:
        async with client_session() as session:
            for params, status in (({"session": "nope"}, 404), ({"pty": "7"}, 404),
                                   ({"pty": "x"}, 400), ({"offset": "99999999"}, 400),
                                   ({"session": ""}, 400), ({"size": "2"}, 400)):
                query = {"session": "proj", "token": links.token, **params}
                try:
                    await session.ws_connect(f"{links.base}/ws", params=query)
                except aiohttp.WSServerHandshakeError as exc:
                    assert exc.status == status, params
                else:
                    raise AssertionError(f"{params} opened a terminal")
            phone = await Terminal.open(session, links.base, links.token)
            await phone.control({"type": "nope"})
            error = await phone.wait_event("error")
            assert error["error"] == "INVALID_COMMAND"
            await phone.run("echo sti''ll", "still")
            assert (await asyncio.to_thread(served.coop, "kill", "proj")).returncode == 0
            await phone.wait_event("detached")
            await phone.wait(lambda: phone.closed, "the socket to close")

    run(check())


def test_stopping_the_server_detaches_its_browsers_and_keeps_the_session(
        served: Served) -> None:
    links = served.links

    async def check() -> None:
        async with client_session() as session:
            phone = await Terminal.open(session, links.base, links.token)
            await phone.run("echo be''fore", "before")
            stopped = await asyncio.to_thread(served.coop, "serve", "--stop")
            assert stopped.returncode == 0
            await phone.wait_event("detached")
            await phone.wait(lambda: phone.closed, "the socket to close")
            assert not phone.events_named("pty_exited")

    run(check())
    assert ls_json(served)[0]["ptys"][0]["state"] == "running"
