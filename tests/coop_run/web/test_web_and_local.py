"""Browsers and a local terminal on one PTY, through the real CLI, daemon and supervisor
(issue 12 points 7 and 10): everyone sees the same bytes and everyone's input arrives,
and the window follows the local terminal and only those browsers that are writable,
sizing, visible and active, so a phone does not shrink the desktop's agent.

The local terminal is the real ``coop attach`` on a pty of 120x40; the desktop is a
WebSocket of 100x30 and the phone one of 40x20. The PTY's size is read from the
supervisor (``info``) and, at the points that matter, from ``stty size`` inside."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

import aiohttp
import pytest
from local_terminal import Terminal as LocalTerminal
from local_terminal import terminal
from supervisor_client import info
from web_support import Coop, Served, Terminal, browse, serve_session

from support.procs import wait_for

pytestmark = pytest.mark.asuser

TIMEOUT = 20.0
IDLE = 4.0  # COOP_WEB_IDLE_SECONDS of the idle test: long enough to look, short to wait


def pty_size(served: Served) -> tuple[int, int]:
    detail = info(served.coop.coop_home / "sessions" / "proj" / "supervisor.sock")
    agent = next(p for p in detail["ptys"] if p["id"] == 0)
    return agent["cols"], agent["rows"]


def local_clients(served: Served) -> int:
    detail = info(served.coop.coop_home / "sessions" / "proj" / "supervisor.sock")
    count: int = detail["session"]["local_clients"]
    return count


@contextlib.contextmanager
def attached_locally(served: Served, cols: int = 120, rows: int = 40,
                     ) -> Iterator[LocalTerminal]:
    """``coop attach proj`` on a pty of ``cols`` x ``rows``, counted by the session."""
    before = local_clients(served)
    with terminal(served.coop, ["attach", "proj"], served.workspace, (cols, rows)) as term:
        wait_for(lambda: local_clients(served) == before + 1, TIMEOUT,
                 "the local terminal to attach")
        yield term


async def until_size(served: Served, size: tuple[int, int], what: str,
                     *browsers: Terminal) -> None:
    """Wait for the supervisor to give the PTY ``size``, reading the browsers meanwhile
    (their heartbeat pongs, and their output, go on as in a real page)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + TIMEOUT
    while (now := await asyncio.to_thread(pty_size, served)) != size:
        if loop.time() >= deadline:
            raise AssertionError(f"timed out waiting for {what}: the PTY is {now}, "
                                 f"not {size}")
        for browser in browsers:
            with contextlib.suppress(TimeoutError):
                await browser.pump(0.02)


async def browser_sees_size(browser: Terminal, tag: str, cols: int, rows: int) -> None:
    """``stty size`` typed in the browser: what the shell inside really has."""
    await browser.type(f"echo {tag}=$(stty size)=\r".encode())
    await browser.wait_output(f"{tag}={rows} {cols}=".encode())


async def local_sees_size(term: LocalTerminal, tag: str, cols: int, rows: int) -> None:
    term.type(f"echo {tag}=$(stty size)=\r".encode())
    await asyncio.to_thread(term.read_until, f"{tag}={rows} {cols}=".encode())


def test_two_browsers_and_a_local_terminal_see_the_same_bytes_and_all_type(
        served: Served) -> None:
    links = served.links

    async def check(session: aiohttp.ClientSession) -> None:
        with attached_locally(served) as local:
            one = await links.terminal(session)
            two = await links.terminal(session)
            for who in ("one", "two", "local"):
                typed = f"echo from-{who}-$((20+22))\r".encode()
                if who == "one":
                    await one.type(typed)
                elif who == "two":
                    await two.type(typed)
                else:
                    local.type(typed)
                shown = f"from-{who}-42".encode()
                await one.wait_output(shown + b"\r\n")
                await two.wait_output(shown + b"\r\n")
                await asyncio.to_thread(local.read_until, shown)
            # the same stream, byte for byte, from where both browsers joined
            start = max(int(one.attached["offset"]), int(two.attached["offset"]))
            first = bytes(one.output[start - int(one.attached["offset"]):])
            second = bytes(two.output[start - int(two.attached["offset"]):])
            end = first.index(b"from-local-42\r\n") + len(b"from-local-42")
            assert first[:end] == second[:end]
            assert first.index(b"echo from-one") < first.index(b"from-two-42") < end
            assert first[:end] in local.output  # the local terminal got the same bytes
            assert not one.events_named("lagged") and not two.events_named("lagged")
            for browser in (one, two):
                await browser.ws.close()

    browse(check)


def test_the_window_follows_writable_visible_browsers_and_the_local_terminal(
        served: Served) -> None:
    links = served.links

    async def check(session: aiohttp.ClientSession) -> None:
        with attached_locally(served) as local:
            assert pty_size(served) == (120, 40)
            desk = await links.terminal(session, cols=100, rows=30)
            assert pty_size(served) == (100, 30)  # applied before the attach answer
            phone = await links.terminal(session, cols=40, rows=20)
            assert (phone.attached["cols"], phone.attached["rows"]) == (40, 20)
            await browser_sees_size(desk, "joined", 40, 20)
            # its tab hidden, the phone stops counting; shown again, it counts at once
            await phone.control({"type": "visibility", "visible": False})
            await until_size(served, (100, 30), "the hidden phone to stop counting",
                             desk, phone)
            await local_sees_size(local, "hidden", 100, 30)
            await phone.control({"type": "visibility", "visible": True})
            await until_size(served, (40, 20), "the phone shown again", desk, phone)
            # "do not size for me", switched on: it still types, and sizes nothing
            await phone.control({"type": "sizing", "sizing": False})
            await until_size(served, (100, 30), "the phone to opt out", desk, phone)
            await browser_sees_size(phone, "opted-out", 100, 30)
            assert pty_size(served) == (100, 30)
            await phone.control({"type": "sizing", "sizing": True})
            await until_size(served, (40, 20), "the phone to opt in", desk, phone)
            await phone.ws.close()
            await until_size(served, (100, 30), "the phone to leave", desk)
            # a phone that joins as "do not size for me" shows the PTY at its own size
            small = await links.terminal(session, cols=40, rows=20, size=0)
            assert (small.attached["cols"], small.attached["rows"]) == (100, 30)
            await browser_sees_size(small, "small", 100, 30)
            # a read-only viewer never counts, whatever it says
            viewer = await links.terminal(session, read_only=True, cols=20, rows=5)
            for control in ({"type": "visibility", "visible": True}, {"type": "active"},
                            {"type": "sizing", "sizing": True},
                            {"type": "resize", "cols": 10, "rows": 3}):
                await viewer.control(control)
            await viewer.type(b"x")  # answered after the controls: all were read
            await viewer.wait_event("blocked")
            assert pty_size(served) == (100, 30)
            assert not viewer.events_named("error") and not small.events_named("error")
            for browser in (desk, small, viewer):
                await browser.ws.close()
            await until_size(served, (120, 40), "the local terminal alone")
            await local_sees_size(local, "alone", 120, 40)

    browse(check)


def test_an_idle_browser_stops_counting_by_itself(coop: Coop) -> None:
    """Past ``COOP_WEB_IDLE_SECONDS`` without activity, with nothing sent by anyone, the
    browsers stop counting and the local terminal's window is the PTY's again (and
    follows that terminal alone); ``active`` or typing makes a browser count again."""
    coop.env["COOP_WEB_IDLE_SECONDS"] = str(IDLE)
    served = serve_session(coop)
    links = served.links

    async def check(session: aiohttp.ClientSession) -> None:
        with attached_locally(served) as local:
            desk = await links.terminal(session, cols=100, rows=30)
            phone = await links.terminal(session, cols=40, rows=20)
            await browser_sees_size(phone, "both", 40, 20)  # typing: the phone is active
            await until_size(served, (120, 40), "both browsers to go idle", desk, phone)
            await local_sees_size(local, "idle", 120, 40)
            local.resize(110, 35)  # the local terminal keeps SPEC 7.2's rule
            await until_size(served, (110, 35), "the local terminal's resize", desk, phone)
            await phone.control({"type": "active"})
            await until_size(served, (40, 20), "the phone to be active again", desk, phone)
            await until_size(served, (110, 35), "the phone to go idle again", desk, phone)
            await desk.type(b"echo de''sk\r")
            await until_size(served, (100, 30), "the desk typing", desk, phone)
            await desk.wait_output(b"desk\r\n")
            await until_size(served, (110, 35), "the desk to go idle", desk, phone)
            for browser in (desk, phone):
                await browser.ws.close()

    browse(check)
