"""The ``serve`` command (SPEC 8, seed ``coop serve``): start the web server, report the
one that runs, stop it; and keep a detached one across the daemon's end.

A server started without ``detach`` belongs to the connection that asked (a foreground
``coop serve``): the handler keeps that connection, stops the server when it ends
(Ctrl+C), and tells it ``server_stopped`` when the server is stopped from elsewhere
(``coop serve --stop``, the daemon's shutdown). A second ``serve`` while one runs gets
the running server's links. With ``detach`` (``coop serve -d``, or given to a running
server) the server stays until ``--stop``: its host, port and both tokens are written
0600 to ``COOP_HOME/web.json``, a keeper (``daemon.keeper``) brings the daemon back if
it crashes, and a daemon that starts while the record exists serves the same links
(``restore``). A graceful shutdown keeps the record; ``--stop`` forgets it.

Tokens never reach a log: every line the daemon writes goes through a filter that
replaces them, whatever logger wrote it (aiohttp's own included).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from typing import Any

from coop_run.daemon.commands import SessionCommands
from coop_run.daemon.feed import SessionFeed
from coop_run.daemon.keeper import Keeper
from coop_run.daemon.server import Connection, Daemon
from coop_run.errors import CoopError, ProtocolError
from coop_run.ipc import protocol
from coop_run.ipc.framing import Message
from coop_run.ipc.schema import encode
from coop_run.layout import RunLayout
from coop_run.statefiles import read_json, write_json_atomic
from coop_run.web.addresses import local_addresses
from coop_run.web.auth import HostCheck, Tokens, host_problem, new_token, token_problem
from coop_run.web.context import WebContext
from coop_run.web.server import WebServer

logger = logging.getLogger(__name__)

DEFAULT_PORT = 8888
DEFAULT_HOST = "127.0.0.1"
HEARTBEAT = 15.0  # a ping after this long without a frame; no pong within half: gone
HEARTBEAT_ENV = "COOP_WEB_HEARTBEAT_SECONDS"  # tests shorten it


def heartbeat(environ: dict[str, str]) -> float:
    """``$COOP_WEB_HEARTBEAT_SECONDS`` if a positive number, else ``HEARTBEAT`` (a dead
    phone is found within 1.5 times it)."""
    try:
        value = float(environ.get(HEARTBEAT_ENV, ""))
    except ValueError:
        return HEARTBEAT
    return value if 0 < value < 3600 else HEARTBEAT


def settings_problem(host: str, port: int, *tokens: str) -> str | None:
    """What is wrong with a server's settings (a request's, or a record's), or None."""
    if not 0 <= port <= 65535:
        return f"port {port} is not from 0 to 65535"
    problem = host_problem(host)
    for token in tokens:
        problem = problem or token_problem(token)
    return problem


class TokenFilter(logging.Filter):
    """Replaces any token of this daemon's servers in a log record, its traceback too."""

    def __init__(self) -> None:
        super().__init__("coop-web-tokens")
        self.tokens: list[Tokens] = []

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = self._redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self._redact(record.exc_text)
        return True

    def _redact(self, text: str) -> str:
        for tokens in self.tokens:
            text = tokens.redact(text)
        return text


class WebControl:
    """The daemon's web server: at most one, started, reported and stopped here."""

    def __init__(self, daemon: Daemon, commands: SessionCommands) -> None:
        self.daemon = daemon
        self.registry = commands.registry
        self.layout = RunLayout(daemon.paths)
        self.feed = SessionFeed(self.registry, daemon.start_task)
        self.keeper = Keeper(daemon.socket_path, self.layout.daemon_log)
        self.server: WebServer | None = None
        self.detached = False
        self._lock = asyncio.Lock()
        self._filter = TokenFilter()
        for handler in logging.getLogger().handlers:
            handler.addFilter(self._filter)

    # --- the extension's face (daemon.extensions.Extension) ------------------------------

    async def handle(self, conn: Connection | None, request: protocol.Request) -> Message:
        if not isinstance(request, protocol.Serve):
            raise CoopError(f"{request.TAG}: not a web command", code=protocol.INVALID_COMMAND)
        if request.stop:
            stopped = await self.stop("stopped by coop serve --stop", forget=True)
            return encode(protocol.ServeStopped(stopped))
        async with self._lock:
            started = self.server is None
            if started:
                host = DEFAULT_HOST if request.host is None else request.host
                port = DEFAULT_PORT if request.port is None else request.port
                problem = settings_problem(host, port, *filter(None, [request.token]))
                if problem is not None:
                    raise CoopError(problem, code=protocol.INVALID_COMMAND)
                await self._start(host, port, request.token, None, detached=False)
            if request.detach and not self.detached:
                self._keep()
            server = self.server
            assert server is not None
            reply = protocol.ServeReply(
                started=started, detached=self.detached, host=server.host,
                port=server.port, urls=server.urls, read_only_urls=server.read_only_urls)
        if started and not request.detach and conn is not None:
            return await self._foreground(conn, reply, server)
        return encode(reply)

    async def restore(self) -> None:
        """A daemon starts while a detached server's record exists: serve it again."""
        record = read_json(self.layout.web_server)
        fields = _record_fields(record)
        if fields is None:
            logger.warning("ignoring %s: not a web server record", self.layout.web_server)
            return
        host, port, token, read_only = fields
        async with self._lock:
            if self.server is not None:
                return
            try:
                await self._start(host, port, token, read_only, detached=True)
            except CoopError as exc:
                logger.error("cannot bring the detached web server back: %s", exc.message)

    async def close(self) -> None:
        """The daemon shuts down: the server stops, a detached one's record stays."""
        await self.stop("the daemon shut down", forget=False)

    # --- the server --------------------------------------------------------------------

    async def _start(self, host: str, port: int, token: str | None, read_only: str | None,
                     *, detached: bool) -> None:
        tokens = Tokens(token or new_token(), read_only or new_token())
        self._filter.tokens.append(tokens)
        check = HostCheck(host, hostname=socket.gethostname(), local_addresses=local_addresses)
        context = WebContext(self.daemon, self.registry, self.feed, tokens=tokens,
                             host_check=check, heartbeat=heartbeat(dict(os.environ)))
        server = WebServer(context, host, port)
        await server.start()
        self.server = server
        self.feed.start()
        self.daemon.web_server = True
        self.daemon.activity_changed()
        logger.info("web server listening on %s port %d", host, server.port)
        if detached:
            self._keep()

    def _keep(self) -> None:
        """The server stays until --stop: its record, and a keeper for crashes."""
        server = self.server
        assert server is not None
        self.detached = True
        tokens = server.context.tokens
        write_json_atomic(self.layout.web_server, {
            "host": server.host, "port": server.port, "token": tokens.full,
            "read_only_token": tokens.read_only})
        self.keeper.start()

    async def stop(self, reason: str, *, forget: bool) -> bool:
        """Stop the server (whether one ran); ``forget`` removes a detached one's record."""
        async with self._lock:
            server, self.server = self.server, None
            if forget:
                self.layout.web_server.unlink(missing_ok=True)
            await self.keeper.stop()
            self.detached = False
            if server is None:
                return False
            self.feed.stop()
            await server.stop(reason)
            self.daemon.web_server = False
            self.daemon.activity_changed()
            logger.info("web server stopped: %s", reason)
            return True

    async def _foreground(self, conn: Connection, reply: protocol.ServeReply,
                          server: WebServer) -> Message:
        """Answer, then hold the connection: the server is this client's until it
        hangs up (the server stops, unless detached meanwhile) or the server stops."""
        conn.handed_over = True  # the daemon sends nothing more on it
        await conn.send(encode(reply))
        loop = asyncio.get_running_loop()
        hang_up = loop.create_task(_hang_up(conn))
        stopped = loop.create_task(server.stopped.wait())
        try:
            await asyncio.wait({hang_up, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            hang_up.cancel()
            stopped.cancel()
        if server.stopped.is_set():
            with contextlib.suppress(OSError):
                await conn.send(encode(protocol.ServerStopped(server.stop_reason)))
        elif self.server is server and not self.detached:
            await self.stop("its coop serve ended", forget=False)
        return protocol.ok()


async def _hang_up(conn: Connection) -> None:
    """Until the client goes (whatever it sends meanwhile is not for us)."""
    with contextlib.suppress(ProtocolError, OSError):
        while await conn.receive() is not None:
            pass


def _record_fields(record: dict[str, Any] | None) -> tuple[str, int, str, str] | None:
    if record is None:
        return None
    host, port = record.get("host"), record.get("port")
    token, read_only = record.get("token"), record.get("read_only_token")
    if not (isinstance(host, str) and isinstance(port, int) and isinstance(token, str)
            and isinstance(read_only, str)) or isinstance(port, bool):
        return None
    if settings_problem(host, port, token, read_only) is not None or token == read_only:
        return None
    return host, port, token, read_only


def extension(daemon: Daemon, commands: SessionCommands) -> WebControl:
    """The daemon's ``Extension`` for the web (``daemon.extensions``)."""
    return WebControl(daemon, commands)
