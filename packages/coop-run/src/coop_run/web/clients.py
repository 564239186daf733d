"""The web server's clients: every open WebSocket and what its token lets it do.

A ``WebClient`` is one browser tab's socket: the event stream (``/api/events``) or a
PTY's terminal (``/ws``). A terminal client carries its kind (``web``; the supervisor
counts it for ``ls``) and whether it may type (``read_only``). The window-size rule
(issue 12 point 7: visible, recently active, writable clients only) is the supervisor's
(``session.sizing``), which hears every resize, keystroke and ``visibility``/``active``/
``sizing`` message through the relay; the web server keeps no copy of it. The registry
closes every socket when the server stops.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal, Protocol

from coop_run.ipc import protocol
from coop_run.ipc.schema import encode

logger = logging.getLogger(__name__)

_ids = itertools.count(1)


class Socket(Protocol):
    """What the registry does with a client's WebSocket."""

    async def send_str(self, data: str) -> None: ...

    async def close(self) -> object: ...


@dataclass(eq=False)
class WebClient:
    """One open WebSocket of the web server."""

    socket: Socket
    remote: str
    read_only: bool
    role: Literal["events", "terminal"]
    session: str | None = None
    pty: int | None = None
    kind: str = "web"
    id: int = field(default_factory=lambda: next(_ids))

    def describe(self) -> str:
        what = "events" if self.role == "events" else f"{self.session} pty {self.pty}"
        mode = "read-only" if self.read_only else "writable"
        return f"web client {self.id} ({self.remote}, {mode}): {what}"


class WebClients:
    """Every open WebSocket of the server, in the order they came."""

    def __init__(self) -> None:
        self._clients: dict[int, WebClient] = {}

    def __iter__(self) -> Iterator[WebClient]:
        return iter(list(self._clients.values()))

    def __len__(self) -> int:
        return len(self._clients)

    def add(self, client: WebClient) -> WebClient:
        self._clients[client.id] = client
        logger.info("%s connected", client.describe())
        return client

    def remove(self, client: WebClient) -> None:
        if self._clients.pop(client.id, None) is not None:
            logger.info("%s left", client.describe())

    async def close_all(self) -> None:
        """The server stops: every terminal is told ``detached`` (as the daemon's
        shutdown tells a local one), every socket is closed, and each handler ends."""
        detached = json.dumps(encode(protocol.Detached()))
        for client in list(self._clients.values()):
            if client.role == "terminal":
                with contextlib.suppress(ConnectionError):
                    await client.socket.send_str(detached)
            await client.socket.close()
