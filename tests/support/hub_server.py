"""A loopback stand-in for Docker Hub in front of the bench registry (run as a script).

Behaves like the real thing where clients get it wrong:
- ``/v2/`` without a token answers 401 with a Bearer challenge naming ``/token``;
- ``/token`` issues anonymous pull tokens for ``library/*`` and, against HTTP basic
  credentials, pull+push tokens for anything; like Hub, a token may carry fewer rights
  than asked for (anonymous on ``private/*`` gets none, and the request then fails 401);
- manifest and API requests with a valid token are proxied to the registry;
- blob GETs are redirected (307) to a second listener under another host name
  (``localhost``), the "CDN", which answers 400 if an Authorization header reaches it.

Every request is appended as one JSON line to the events file (before its response is
sent), so tests can check who sent what where.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import re
import secrets
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import ClientSession, ClientTimeout, web

SERVICE = "coop-test-hub"
REPO_PATH = re.compile(r"^/v2/(?P<name>.+?)/(?P<kind>manifests|blobs|tags)/(?P<rest>.*)$")
FORWARD_REQUEST = ("Accept", "Content-Type", "Range", "Content-Range")
FORWARD_RESPONSE = ("Content-Type", "Content-Length", "Docker-Content-Digest", "Location",
                    "Range", "Docker-Upload-UUID", "Docker-Distribution-API-Version", "Link",
                    "ETag", "Content-Range")


class Hub:
    """State of one hub: issued tokens and the CDN signing key."""

    def __init__(self, registry: str, username: str, password: str, events: Path) -> None:
        self.registry = registry.rstrip("/")
        self.username = username
        self.password = password
        self.events = events
        self.tokens: dict[str, dict[str, set[str]]] = {}
        self.key = secrets.token_bytes(32)
        self.port = 0
        self.cdn_port = 0
        self.session: ClientSession | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self, listener: str, request: web.Request, status: int) -> None:
        auth = request.headers.get("Authorization", "")
        event = {"listener": listener, "method": request.method, "path": request.path_qs,
                 "host": request.host, "auth": auth.split(" ", 1)[0].lower() if auth else "",
                 "status": status}
        with self.events.open("a") as out:
            out.write(json.dumps(event) + "\n")

    def challenge(self, scope: str | None) -> web.Response:
        value = f'Bearer realm="{self.url}/token",service="{SERVICE}"'
        if scope:
            value += f',scope="{scope}"'
        body = {"errors": [{"code": "UNAUTHORIZED", "message": "authentication required",
                            "detail": None}]}
        return web.json_response(body, status=401, headers={"WWW-Authenticate": value})

    def grants(self, request: web.Request) -> dict[str, set[str]] | None:
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Bearer "):
            return None
        return self.tokens.get(auth[len("Bearer "):].strip())

    def sign(self, path: str) -> str:
        return hmac.new(self.key, path.encode(), hashlib.sha256).hexdigest()

    # -- front listener ----------------------------------------------------------------

    async def token(self, request: web.Request) -> web.Response:
        if request.query.get("service") != SERVICE:
            return web.json_response({"details": "unknown service"}, status=400)
        authenticated = False
        auth = request.headers.get("Authorization", "")
        if auth:
            if not auth.startswith("Basic "):
                return web.json_response({"details": "unsupported authorization"}, status=401)
            try:
                user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return web.json_response({"details": "malformed credentials"}, status=400)
            if not (hmac.compare_digest(user, self.username)
                    and hmac.compare_digest(password, self.password)):
                return web.json_response({"details": "incorrect username or password"},
                                         status=401)
            authenticated = True
        granted: dict[str, set[str]] = {}
        for scope in request.query.getall("scope", []):
            for item in scope.split(" "):
                kind, _, rest = item.partition(":")
                name, _, actions = rest.rpartition(":")
                if kind != "repository" or not name:
                    continue
                wanted = set(actions.split(","))
                allowed = {"pull", "push"} if authenticated else (
                    {"pull"} if name.startswith("library/") else set())
                granted.setdefault(name, set()).update(wanted & allowed)
        token = secrets.token_urlsafe(24)
        self.tokens[token] = granted
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        return web.json_response({"token": token, "access_token": token, "expires_in": 300,
                                  "issued_at": now})

    async def base(self, request: web.Request) -> web.Response:
        if self.grants(request) is None:
            return self.challenge(None)
        return web.json_response({}, headers={"Docker-Distribution-API-Version": "registry/2.0"})

    async def repo(self, request: web.Request) -> web.StreamResponse:
        match = REPO_PATH.match(request.path)
        if match is None:
            return web.json_response({"errors": [{"code": "NAME_UNKNOWN"}]}, status=404)
        name = match["name"]
        pulling = request.method in ("GET", "HEAD")
        needed = {"pull"} if pulling else {"pull", "push"}
        grants = self.grants(request)
        if grants is None or not needed <= grants.get(name, set()):
            return self.challenge(f"repository:{name}:{','.join(sorted(needed, reverse=True))}")
        if (match["kind"] == "blobs" and request.method == "GET"
                and match["rest"].startswith("sha256:")):
            path = f"/blobs/{name}/{match['rest']}"
            expires = str(int(time.time()) + 300)
            location = (f"http://localhost:{self.cdn_port}{path}?expires={expires}"
                        f"&sig={self.sign(path + expires)}")
            return web.Response(status=307, headers={"Location": location})
        return await self.forward(request, request.path_qs)

    async def forward(self, request: web.Request, path_qs: str) -> web.StreamResponse:
        assert self.session is not None
        headers = {k: request.headers[k] for k in FORWARD_REQUEST if k in request.headers}
        data = await request.read() if request.can_read_body else None
        async with self.session.request(request.method, self.registry + path_qs,
                                        headers=headers, data=data,
                                        allow_redirects=False) as upstream:
            out_headers = {k: upstream.headers[k] for k in FORWARD_RESPONSE
                           if k in upstream.headers}
            location = out_headers.get("Location")
            if location and location.startswith(self.registry):
                out_headers["Location"] = self.url + location[len(self.registry):]
            response = web.StreamResponse(status=upstream.status, headers=out_headers)
            await response.prepare(request)
            if request.method != "HEAD":
                async for chunk in upstream.content.iter_chunked(1 << 16):
                    await response.write(chunk)
            await response.write_eof()
            return response

    # -- CDN listener ------------------------------------------------------------------

    async def cdn_blob(self, request: web.Request) -> web.StreamResponse:
        if "Authorization" in request.headers:
            return web.Response(status=400, text="credentials must not be sent to the CDN\n")
        path = request.path
        expires = request.query.get("expires", "")
        if not hmac.compare_digest(request.query.get("sig", ""), self.sign(path + expires)):
            return web.Response(status=403, text="bad signature\n")
        if not expires.isdigit() or int(expires) < time.time():
            return web.Response(status=403, text="expired\n")
        name, _, digest = path[len("/blobs/"):].rpartition("/")
        return await self.forward(request, f"/v2/{name}/blobs/{digest}")


def logged(hub: Hub, listener: str) -> Callable[[web.Request, web.StreamResponse],
                                                   Awaitable[None]]:
    """Logs a request as its response headers go out, so the event is on disk before the
    client can see the answer (tests then need not wait for it)."""
    async def on_prepare(request: web.Request, response: web.StreamResponse) -> None:
        hub.log(listener, request, response.status)
    return on_prepare


async def serve(args: argparse.Namespace) -> None:
    hub = Hub(args.registry, args.username, args.password, args.events)
    hub.session = ClientSession(timeout=ClientTimeout(total=120))
    front = web.Application(client_max_size=1 << 30)
    front.on_response_prepare.append(logged(hub, "hub"))
    front.router.add_get("/token", hub.token)
    front.router.add_get("/v2/", hub.base)
    front.router.add_get("/v2", hub.base)
    front.router.add_route("*", "/v2/{tail:.+}", hub.repo)
    cdn = web.Application()
    cdn.on_response_prepare.append(logged(hub, "cdn"))
    cdn.router.add_get("/blobs/{tail:.+}", hub.cdn_blob)

    front_runner = web.AppRunner(front, access_log=None)
    cdn_runner = web.AppRunner(cdn, access_log=None)
    await front_runner.setup()
    await cdn_runner.setup()
    try:
        site = web.TCPSite(front_runner, "127.0.0.1", 0)
        await site.start()
        hub.port = front_runner.addresses[0][1]
        await web.TCPSite(cdn_runner, "127.0.0.1", 0).start()
        hub.cdn_port = cdn_runner.addresses[0][1]
        # "localhost" may resolve to ::1 first: listen there too when we can.
        with contextlib.suppress(OSError):
            await web.TCPSite(cdn_runner, "::1", hub.cdn_port).start()
        tmp = args.ports_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"port": hub.port, "cdn_port": hub.cdn_port}))
        tmp.replace(args.ports_file)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        await stop.wait()
    finally:
        await front_runner.cleanup()
        await cdn_runner.cleanup()
        await hub.session.close()


def main() -> None:
    parser = argparse.ArgumentParser(description="coop loopback Docker Hub stand-in")
    parser.add_argument("--registry", required=True, help="http://127.0.0.1:PORT")
    parser.add_argument("--ports-file", type=Path, required=True)
    parser.add_argument("--events", type=Path, required=True)
    parser.add_argument("--username", required=True)
    parser.add_argument("--password", required=True)
    asyncio.run(serve(parser.parse_args()))


if __name__ == "__main__":
    main()
