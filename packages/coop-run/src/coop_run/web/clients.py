"""The web server's clients: every open WebSocket, what its token lets it do, and what
the window-size rule for web clients needs to know of it (issue 12, point 7).

A ``WebClient`` is one browser tab's socket: the event stream (``/api/events``) or a
PTY's terminal (``/ws``). A terminal client carries its kind (``web``; the supervisor
counts it for ``ls``), whether it may type (``read_only``), whether its window may size
the PTY (``sizing``: false for "do not size for me"), whether its tab is ``visible``
and when it last typed (``active_at``). The supervisor applies ``read_only`` and
``sizing`` (``SupervisorAttach``); a rule that also weighs visibility and activity
changes ``sizing`` through the supervisor's ``FanOut.set_sizing``. The registry closes
every socket when the server stops.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import time
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
    sizing: bool = True       # its window may size the PTY ("do not size for me": false)
    visible: bool = True      # its tab is shown
    cols: int | None = None
    rows: int | None = None
    active_at: float = field(default_factory=time.monotonic)  # when it last typed
    id: int = field(default_factory=lambda: next(_ids))

    def typed(self) -> None:
        self.active_at = time.monotonic()

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
