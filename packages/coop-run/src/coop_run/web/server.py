"""One running web server: the application bound to its host and port, its links, and
its stop (every WebSocket closed, the port released)."""

from __future__ import annotations

import asyncio
import errno
import logging
import socket

from aiohttp import web

from coop_run.errors import CoopError
from coop_run.ipc import protocol
from coop_run.web.addresses import links, url_host
from coop_run.web.app import AccessLog, access_logger, build_app
from coop_run.web.context import WebContext

logger = logging.getLogger(__name__)

SHUTDOWN_TIMEOUT = 2.0  # for handlers to end once their sockets are closed


def bind_problem(exc: OSError, host: str, port: int) -> str:
    """One line for why the server cannot listen on ``host:port``."""
    where = f"{url_host(host)}:{port}"
    if isinstance(exc, socket.gaierror):
        return f"cannot listen on {where}: no such host ({exc.strerror or exc})"
    if exc.errno == errno.EADDRINUSE:
        return f"cannot listen on {where}: the port is in use (coop serve -p PORT picks another)"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"cannot listen on {where}: {host} is not an address of this machine"
    if exc.errno == errno.EACCES:
        return f"cannot listen on {where}: ports below 1024 need privileges"
    return f"cannot listen on {where}: {exc.strerror or exc}"


class WebServer:
    """The application of ``context`` on ``host:port`` (port 0: one the kernel picks)."""

    def __init__(self, context: WebContext, host: str, port: int) -> None:
        self.context = context
        self.host = host
        self.port = port
        self.stopped = asyncio.Event()
        self.stop_reason = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        """Listen; ``CoopError`` (``BIND_FAILED``) in one line when it cannot."""
        runner = web.AppRunner(build_app(self.context), access_log_class=AccessLog,
                               access_log=access_logger, shutdown_timeout=SHUTDOWN_TIMEOUT)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise CoopError(bind_problem(exc, self.host, self.port),
                            code=protocol.BIND_FAILED) from None
        self._runner = runner
        self.port = int(runner.addresses[0][1])

    async def stop(self, reason: str) -> None:
        """Close every WebSocket and the listener; ``stopped`` is set with ``reason``."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await self.context.clients.close_all()
            await runner.cleanup()
        self.stop_reason = reason
        self.stopped.set()

    @property
    def urls(self) -> list[str]:
        return links(self.host, self.port, self.context.tokens.full)

    @property
    def read_only_urls(self) -> list[str]:
        return links(self.host, self.port, self.context.tokens.read_only)
