"""The parts of the daemon that live in the packages above it (``web``; ``tunnel``
next), loaded by module name the first time they are needed.

They run in the daemon's process and loop, but the daemon's own code never imports them
(``scripts/check-layers``: web and tunnel may import the daemon, not the other way
round), and a daemon that never serves a page never loads aiohttp: the import happens in
a worker thread at the first ``serve`` request, or at start when a detached web server
is to be restored (``RunLayout.web_server``). An extension module offers
``extension(daemon, commands) -> Extension``.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from typing import TYPE_CHECKING, Any, Protocol, cast

from coop_run.ipc import protocol
from coop_run.ipc.framing import Message
from coop_run.layout import RunLayout

if TYPE_CHECKING:
    from coop_run.daemon.commands import SessionCommands
    from coop_run.daemon.server import Connection, Daemon

log = logging.getLogger(__name__)

WEB = "coop_run.web.control"


class Extension(Protocol):
    """What the daemon asks of a loaded extension."""

    async def handle(self, conn: Connection | None, request: protocol.Request) -> Message:
        """Serve one of its commands."""
        ...

    async def restore(self) -> None:
        """Bring back what it kept across a daemon's end (a detached server)."""
        ...

    async def close(self) -> None:
        """The daemon shuts down."""
        ...


class Extensions:
    """The daemon's loaded extensions and the commands that load them."""

    def __init__(self, daemon: Daemon, commands: SessionCommands) -> None:
        self.daemon = daemon
        self.commands = commands
        self._loaded: dict[str, Extension] = {}
        self._lock = asyncio.Lock()

    def register(self) -> None:
        self.daemon.register("serve", self._serve)
        self.daemon.on_shutdown(self.close)
        if RunLayout(self.daemon.paths).web_server.exists():
            self.daemon.on_start(self._start_restoring)

    def _start_restoring(self) -> None:
        self.daemon.start_task(self._restore(WEB))

    async def load(self, name: str) -> Extension:
        async with self._lock:
            loaded = self._loaded.get(name)
            if loaded is None:
                module: Any = await asyncio.to_thread(importlib.import_module, name)
                loaded = self._loaded[name] = cast(
                    Extension, module.extension(self.daemon, self.commands))
                log.info("loaded %s", name)
        return loaded

    async def _serve(self, conn: Connection | None, request: protocol.Serve) -> Message:
        return await (await self.load(WEB)).handle(conn, request)

    async def _restore(self, name: str) -> None:
        try:
            await (await self.load(name)).restore()
        except Exception:  # a task of the daemon's group: never end the daemon
            log.exception("restoring %s failed", name)

    async def close(self) -> None:
        for extension in list(self._loaded.values()):
            await extension.close()
