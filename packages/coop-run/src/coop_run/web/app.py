"""The aiohttp application: its routes, the guard every request passes, and the page.

The guard is one middleware, so it stands before every route the router has, those added
later included (a test builds its list of routes from this router): the ``Host`` must be
one the server was bound for, a token must be presented (``auth``), a browser page of
another origin may not open a WebSocket or change anything, and a read-only token may
only look. A first visit with ``?token=`` in a page's URL gets the token as an HttpOnly,
SameSite=Strict cookie and is sent to the same URL without it, so the token leaves the
address bar and the history. Refusals are JSON with the IPC's codes; the HTTP status
follows the code (``http_status``). The access log names the path, never the query.

The page itself is the next issue's: ``/`` is a placeholder, ``/assets/`` serves the
bundle the front end's build will put in ``coop_run/web/static``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Final

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from coop_run.ipc import protocol
from coop_run.ipc.framing import MAX_FRAME_SIZE
from coop_run.web import rest, terminal
from coop_run.web.auth import COOKIE, presented_token, same_origin
from coop_run.web.context import ACCESS, CONTEXT, WebContext, access_of

access_logger = logging.getLogger("coop_run.web.access")

STATIC = Path(__file__).parent / "static"  # the front end's bundle, once it is built
MAX_BODY = MAX_FRAME_SIZE  # a REST body, as large as an IPC message at most
SAFE_METHODS: Final = frozenset({"GET", "HEAD"})
NOT_PAGES: Final = ("/api/", "/ws")  # their URLs keep the token: no cookie, no redirect

INDEX = b"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>coop</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body><h1>coop</h1>
<p>The web UI's page comes with the next release. Its API is here already:
<a href="/api/sessions">/api/sessions</a>.</p></body></html>
"""


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def forbidden(message: str) -> web.Response:
    return web.json_response(protocol.error(protocol.FORBIDDEN, message), status=403)


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    context = request.app[CONTEXT]
    host = request.headers.get("Host")
    if not context.host_check.allows(host):
        return forbidden("this server does not answer for that host name")
    token, source = presented_token(request.query, request.headers.get("Authorization"),
                                    request.cookies)
    access = context.tokens.access(token)
    if access is None:
        return forbidden("a valid token is required (the link coop serve printed)")
    websocket = request.headers.get("Upgrade", "").lower() == "websocket"
    origin = request.headers.get("Origin")
    changes = request.method not in SAFE_METHODS
    if origin is not None and (websocket or changes) and not same_origin(origin, host):
        return forbidden("a page of another site may not use this server")
    if access == "read-only" and changes:
        return forbidden("this link is read-only")
    if (source == "query" and token is not None and request.method == "GET"
            and not websocket and not request.path.startswith(NOT_PAGES)):
        return _move_token_to_cookie(request, token)
    request[ACCESS] = access
    response = await handler(request)
    return response


def _move_token_to_cookie(request: web.Request, token: str) -> web.StreamResponse:
    kept = [(k, v) for k, v in request.query.items() if k != "token"]
    response = web.Response(status=303,
                            headers={"Location": str(request.rel_url.with_query(kept))})
    response.set_cookie(COOKIE, token, httponly=True, samesite="Strict", path="/")
    return response


async def _headers(request: web.Request, response: web.StreamResponse) -> None:
    """No page of ours in another's frame, and no URL of ours (a token) in a Referer."""
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Cache-Control", "no-store")


async def index(_request: web.Request) -> web.Response:
    return web.Response(body=INDEX, content_type="text/html", charset="utf-8")


async def asset(request: web.Request) -> web.StreamResponse:
    """A file of the front end's bundle; nothing outside it."""
    relative = request.match_info["path"]
    root = STATIC.resolve()
    target = (root / relative).resolve()
    if ".." in Path(relative).parts or not target.is_relative_to(root) or not target.is_file():
        return web.json_response(protocol.error(protocol.NOT_SUPPORTED, "no such asset"),
                                 status=404)
    return web.FileResponse(target)


async def terminal_route(request: web.Request) -> web.StreamResponse:
    return await terminal.terminal_socket(request.app[CONTEXT], request,
                                          access_of(request) == "read-only")


class AccessLog(AbstractAccessLogger):
    """One line per request: who, method, path (never the query: it may hold a token),
    status, time."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse,
            time: float) -> None:
        path = request.path
        context = request.app.get(CONTEXT) if isinstance(request, web.Request) else None
        if context is not None:
            path = context.tokens.redact(path)
        self.logger.info("%s %s %s %d %.1fms", request.remote, request.method, path,
                         response.status, time * 1000)


def build_app(context: WebContext) -> web.Application:
    """The application with every route behind ``guard``."""
    app = web.Application(middlewares=[guard], client_max_size=MAX_BODY)
    app[CONTEXT] = context
    app.on_response_prepare.append(_headers)
    app.router.add_get("/", index)
    app.router.add_get("/assets/{path:.+}", asset)
    app.router.add_get("/api/sessions", rest.list_sessions)
    app.router.add_post("/api/sessions", rest.create)
    app.router.add_delete("/api/sessions/{name}", rest.kill)
    app.router.add_post("/api/sessions/{name}/shell", rest.shell)
    app.router.add_post("/api/sessions/{name}/restart", rest.restart)
    app.router.add_delete("/api/sessions/{name}/ptys/{pty}", rest.close_pty)
    app.router.add_get("/api/events", rest.events)
    app.router.add_get("/ws", terminal_route)
    return app
