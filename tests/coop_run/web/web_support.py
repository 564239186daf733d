"""The web tests' bench: the real ``coop`` CLI, daemon, supervisors and web server, and a
real aiohttp client on 127.0.0.1; everything stopped by PID at the end of each test.

``served`` is a built ``image = "host"`` workspace with its session running and a
detached web server on a port the kernel picked (``coop serve -p 0 -d``), parsed from
what ``coop serve`` printed. ``Terminal`` is a PTY's WebSocket as a browser tab uses it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import struct
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from coop_cli import COOP, Result, coop_environ, stop_started

RUN_TIMEOUT = 60.0
TIMEOUT = 20.0
LINK = re.compile(r"^  (Local|Network|Read-only):\s+(http://\S+)$", re.M)
TOKEN = re.compile(r"[?&]token=([A-Za-z0-9._~-]+)")

COOPFILE = ('[base]\nimage = "host"\n\n[agent]\ncommand = "/bin/sh"\n\n'
            '[network]\nmode = "none"\n\n[session]\npersist = []\n')


class Coop:
    """The real ``coop`` with the test's environment (plus ``extra`` variables)."""

    def __init__(self, coop_env: Any) -> None:
        self.env = coop_environ(coop_env)
        self.coop_home: Path = coop_env.coop_home
        self.home: Path = coop_env.home

    def __call__(self, *args: str, cwd: Path | None = None,
                 timeout: float = RUN_TIMEOUT) -> Result:
        proc = subprocess.run([str(COOP), *args], cwd=cwd or self.home, env=self.env,
                              capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, check=False)
        return Result(proc.returncode, proc.stdout, proc.stderr)

    def popen(self, *args: str, cwd: Path | None = None) -> subprocess.Popen[str]:
        return subprocess.Popen([str(COOP), *args], cwd=cwd or self.home, env=self.env,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    def daemon_pid(self) -> int | None:
        try:
            return int((self.coop_home / "daemon.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def logs(self) -> dict[Path, bytes]:
        """Every log coop wrote: the daemon's, the sessions', the builds'."""
        return {p: p.read_bytes() for p in (self.coop_home / "logs").rglob("*") if p.is_file()}


@pytest.fixture
def coop(coop_env: Any) -> Iterator[Coop]:
    runner = Coop(coop_env)
    yield runner
    stop_started(coop_env.coop_home)


def make_workspace(coop: Coop, name: str, *, build: bool = True) -> Path:
    workspace = coop.home / name
    workspace.mkdir(parents=True)
    (workspace / "coop.toml").write_text(COOPFILE)
    if build:
        result = coop("init", "-q", cwd=workspace)
        assert result.returncode == 0, result
    return workspace


@dataclass
class Links:
    """What ``coop serve`` printed."""

    local: str
    network: list[str]
    read_only: str
    output: str

    @property
    def token(self) -> str:
        return token_of(self.local)

    @property
    def read_only_token(self) -> str:
        return token_of(self.read_only)

    @property
    def base(self) -> str:
        return self.local.split("/?", 1)[0]

    @property
    def port(self) -> int:
        return int(self.base.rsplit(":", 1)[1])


def token_of(url: str) -> str:
    found = TOKEN.search(url)
    assert found is not None, url
    return found.group(1)


def parse_links(output: str) -> Links:
    found = LINK.findall(output)
    local = [url for kind, url in found if kind == "Local"]
    read_only = [url for kind, url in found if kind == "Read-only"]
    assert len(local) == 1 and len(read_only) == 1, output
    return Links(local[0], [url for kind, url in found if kind == "Network"], read_only[0],
                 output)


def serve(coop: Coop, *args: str) -> Links:
    result = coop("serve", *args)
    assert result.returncode == 0, result
    return parse_links(result.stdout)


@dataclass
class Served:
    coop: Coop
    workspace: Path
    links: Links


def serve_session(coop: Coop) -> Served:
    """``~/proj`` built, its session running, a detached server on a free port."""
    workspace = make_workspace(coop, "proj")
    result = coop("-d", cwd=workspace)
    assert result.returncode == 0, result
    return Served(coop, workspace, serve(coop, "-p", "0", "-d"))


@pytest.fixture
def served(coop: Coop) -> Served:
    return serve_session(coop)


# --- a browser's side ----------------------------------------------------------------------

def run(coro: Any) -> Any:
    """Run one test's client coroutine on a fresh loop."""
    return asyncio.run(asyncio.wait_for(coro, 120.0))


@contextlib.asynccontextmanager
async def client_session(**headers: str) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(headers=headers or None) as session:
        yield session


class Terminal:
    """One PTY's WebSocket: everything received, split into bytes and events."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.output = bytearray()
        self.frames: list[int] = []  # the size of each binary frame received
        self.events: list[dict[str, Any]] = []
        self.attached: dict[str, Any] = {}
        self.closed = False

    @classmethod
    async def open(cls, session: aiohttp.ClientSession, base: str, token: str,
                   **query: Any) -> Terminal:
        params = {"session": "proj", "token": token, **{k: str(v) for k, v in query.items()}}
        ws = await session.ws_connect(f"{base}/ws", params=params, max_msg_size=0)
        terminal = cls(ws)
        first = await asyncio.wait_for(ws.receive(), TIMEOUT)
        assert first.type == aiohttp.WSMsgType.TEXT, first
        terminal.attached = json.loads(first.data)
        assert terminal.attached["event"] == "attached", terminal.attached
        return terminal

    @property
    def offset(self) -> int:
        """Where this client would resume: the attach offset, every byte, every lag."""
        lost = sum(int(e["bytes"]) for e in self.events if e.get("event") == "lagged")
        return int(self.attached["offset"]) + len(self.output) + lost

    async def pump(self, timeout: float) -> None:
        message = await asyncio.wait_for(self.ws.receive(), timeout)
        if message.type == aiohttp.WSMsgType.BINARY:
            self.output += message.data
            self.frames.append(len(message.data))
        elif message.type == aiohttp.WSMsgType.TEXT:
            self.events.append(json.loads(message.data))
        else:
            self.closed = True

    async def wait(self, predicate: Callable[[], bool], what: str,
                   timeout: float = TIMEOUT) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate():
            remaining = deadline - loop.time()
            if remaining <= 0 or self.closed:
                ended = "timed out" if remaining <= 0 else "the socket ended"
                raise AssertionError(f"{ended} waiting for {what}: output tail "
                                     f"{bytes(self.output[-300:])!r}, events {self.events}")
            try:
                await self.pump(remaining)
            except TimeoutError:
                continue

    async def wait_output(self, needle: bytes, since: int = 0,
                          timeout: float = TIMEOUT) -> None:
        await self.wait(lambda: needle in self.output[since:], repr(needle), timeout)

    async def wait_event(self, name: str, timeout: float = TIMEOUT) -> dict[str, Any]:
        await self.wait(lambda: any(e.get("event") == name for e in self.events), name,
                        timeout)
        return next(e for e in self.events if e.get("event") == name)

    def events_named(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("event") == name]

    async def type(self, data: bytes) -> None:
        await self.ws.send_bytes(data)

    async def control(self, message: dict[str, Any]) -> None:
        await self.ws.send_str(json.dumps(message))

    def cut(self) -> None:
        """Drop the connection as a phone losing its network does: a reset, no close."""
        sock = self.ws.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        connection = self.ws._response.connection
        assert connection is not None and connection.transport is not None
        connection.transport.abort()
        self.closed = True

    async def run(self, command: str, marker: str) -> bytes:
        mark = len(self.output)
        await self.type(command.encode() + b"\r")
        await self.wait_output(marker.encode() + b"\r\n", since=mark)
        return bytes(self.output[mark:])
