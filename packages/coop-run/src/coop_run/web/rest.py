"""The REST API (SPEC 8) and the session event stream.

Each call becomes the IPC request of the same meaning and goes through the daemon's one
dispatch (``Daemon.dispatch``: the command table ``coop`` itself uses), so the web and
the CLI cannot drift: the same checks, the same answers, the same error codes (as HTTP
statuses: ``app.http_status``). A body may set only what a page may choose: a create
takes ``name``, ``workspace``, ``cols``, ``rows`` and never Coopfile overrides (the
Coopfile's trust is the daemon's, and an untrusted one is refused, 403, since there is
no terminal to ask). ``/api/events`` is a WebSocket that sends every session's ``ls``
entry when it opens and again at each change (``daemon.feed``): nothing polls.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Collection
from typing import Any

from aiohttp import WSMsgType, web

from coop_run.ipc import protocol
from coop_run.ipc.framing import Message
from coop_run.ipc.schema import encode
from coop_run.web.clients import WebClient
from coop_run.web.context import ACCESS, CONTEXT, WebContext

logger = logging.getLogger(__name__)

EVENTS_COALESCE = 0.02  # changes this close together reach a page as one list
EVENTS_INPUT = 64 * 1024  # the event stream reads nothing of a page's; a frame at most this

CREATE_FIELDS = frozenset({"name", "workspace", "cols", "rows"})
SHELL_FIELDS = frozenset({"command", "cols", "rows"})


def _context(request: web.Request) -> WebContext:
    return request.app[CONTEXT]


class _BadBody(Exception):
    def __init__(self, reply: Message) -> None:
        super().__init__(reply.get("message"))
        self.reply = reply


async def _body(request: web.Request, allowed: Collection[str]) -> dict[str, Any]:
    """The JSON object a request carries (none: empty), with only ``allowed`` keys."""
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise _BadBody(protocol.error(protocol.MESSAGE_TOO_LARGE,
                                      "the request body is too large")) from None
    if not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise _BadBody(protocol.error(protocol.MALFORMED_MESSAGE,
                                      "the request body is not JSON")) from None
    if not isinstance(value, dict):
        raise _BadBody(protocol.error(protocol.MALFORMED_MESSAGE,
                                      "the request body must be a JSON object"))
    unknown = sorted(set(value) - set(allowed))
    if unknown:
        raise _BadBody(protocol.error(protocol.INVALID_COMMAND,
                                      f"unknown field {unknown[0][:40]!r}"))
    return value


async def _call_with_body(request: web.Request, allowed: Collection[str],
                          build: Any) -> web.Response:
    context = _context(request)
    try:
        body = await _body(request, allowed)
    except _BadBody as exc:
        return context.refusal(exc.reply)
    message: Message = build(body)
    return await context.call(message)


async def list_sessions(request: web.Request) -> web.Response:
    return await _context(request).call(encode(protocol.Ls()))


async def create(request: web.Request) -> web.Response:
    return await _call_with_body(request, CREATE_FIELDS,
                                 lambda body: {"cmd": "create", **body, "detach": True})


async def kill(request: web.Request) -> web.Response:
    force = request.query.get("force", "") in ("1", "true", "yes")
    message = encode(protocol.Kill(session=request.match_info["name"], force=force or None))
    return await _context(request).call(message)


async def shell(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    return await _call_with_body(
        request, SHELL_FIELDS,
        lambda body: {"cmd": "shell", **body, "session": name, "detach": True})


async def restart(request: web.Request) -> web.Response:
    return await _context(request).call(
        encode(protocol.Restart(session=request.match_info["name"])))


async def close_pty(request: web.Request) -> web.Response:
    context = _context(request)
    text = request.match_info["pty"]
    if not text.isdigit():
        return context.refusal(protocol.error(protocol.INVALID_COMMAND,
                                              "a PTY is named by its number"))
    return await context.call(encode(protocol.ClosePty(
        pty=int(text), session=request.match_info["name"])))


async def events(request: web.Request) -> web.StreamResponse:
    """Every session's ``ls`` entry now, then again whenever one changes."""
    context = _context(request)
    ws = web.WebSocketResponse(heartbeat=context.heartbeat, max_msg_size=EVENTS_INPUT)
    client = context.clients.add(WebClient(ws, request.remote or "?",
                                           request[ACCESS] == "read-only", "events"))
    try:
        await ws.prepare(request)
        sender = asyncio.get_running_loop().create_task(_send_sessions(context, ws))
        try:
            async for message in ws:  # reading also answers the heartbeat's pongs
                if message.type == WSMsgType.ERROR:
                    break
        finally:
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
    finally:
        context.clients.remove(client)
    return ws


async def _send_sessions(context: WebContext, ws: web.WebSocketResponse) -> None:
    feed = context.feed
    version = feed.version
    try:
        while True:
            await ws.send_str(json.dumps(encode(protocol.SessionList(feed.list()))))
            version = await feed.changed(version)
            await asyncio.sleep(EVENTS_COALESCE)
            version = feed.version
    except ConnectionError:
        return
