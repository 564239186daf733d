"""What the web server's handlers share (``WebContext``, reached from a request as
``request.app[CONTEXT]``) and how an IPC refusal becomes an HTTP response."""

from __future__ import annotations

from typing import Final

from aiohttp import web

from coop_run.daemon.feed import SessionFeed
from coop_run.daemon.registry import SessionRegistry
from coop_run.daemon.server import Daemon
from coop_run.ipc import protocol
from coop_run.ipc.framing import Message
from coop_run.web.auth import Access, HostCheck, Tokens
from coop_run.web.clients import WebClients

HTTP_STATUS: Final = {
    protocol.SESSION_NOT_FOUND: 404, protocol.PTY_NOT_FOUND: 404,
    protocol.SESSION_EXISTS: 409, protocol.ROOTFS_NOT_BUILT: 409,
    protocol.UNTRUSTED_COOPFILE: 403, protocol.FORBIDDEN: 403,
    protocol.INVALID_COMMAND: 400, protocol.INVALID_COOPFILE: 400,
    protocol.MALFORMED_MESSAGE: 400, protocol.MESSAGE_TOO_LARGE: 413,
    protocol.NOT_SUPPORTED: 501,
}


def http_status(code: object) -> int:
    """The HTTP status of an IPC error code (500 for one without its own)."""
    return HTTP_STATUS.get(code, 500) if isinstance(code, str) else 500


class WebContext:
    """What every handler shares: the daemon (its one dispatch), the session registry
    and feed, the tokens, the Host check, the open sockets and the heartbeat."""

    def __init__(self, daemon: Daemon, registry: SessionRegistry, feed: SessionFeed, *,
                 tokens: Tokens, host_check: HostCheck, heartbeat: float) -> None:
        self.daemon = daemon
        self.registry = registry
        self.feed = feed
        self.tokens = tokens
        self.host_check = host_check
        self.heartbeat = heartbeat
        self.clients = WebClients()

    def refusal(self, reply: Message) -> web.Response:
        """An IPC refusal as a JSON response with its HTTP status (tokens never in it)."""
        reply = {**reply, "message": self.tokens.redact(str(reply.get("message", "")))}
        return web.json_response(reply, status=http_status(reply.get("error")))

    async def call(self, message: Message) -> web.Response:
        """A request through the daemon's dispatch: its answer, or its refusal."""
        reply = await self.daemon.dispatch(message)
        if reply.get("ok") is True:
            return web.json_response(reply)
        return self.refusal(reply)


CONTEXT: Final = web.AppKey("context", WebContext)
ACCESS: Final = "coop_access"  # what the request's token grants (``Access``)


def access_of(request: web.Request) -> Access:
    access: Access = request[ACCESS]
    return access
