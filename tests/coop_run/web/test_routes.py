"""Every route of the real web server answers 403 without a token (the list comes from
the application's own router, so a route added later without the guard fails here), the
first visit moves the token into a cookie, a foreign Host or Origin is refused, and a
read-only link only looks (SPEC 8, 12)."""

from __future__ import annotations

import re
from typing import Any

import aiohttp
from aiohttp import web
from web_support import Served, client_session, run

from coop_run.web.app import build_app
from coop_run.web.auth import COOKIE

SAMPLE = {"name": "proj", "pty": "1", "path": "app.js"}
CHANGES = {"POST", "DELETE", "PUT", "PATCH"}


def routes() -> list[tuple[str, str]]:
    """(method, path) of every route the application has, placeholders filled in."""
    app = build_app(context=None)  # type: ignore[arg-type]  # only its router is read
    found = []
    for route in app.router.routes():
        canonical = route.resource.canonical if route.resource is not None else "/"
        path = re.sub(r"\{(\w+)(:[^}]*)?\}", lambda m: SAMPLE[m.group(1)], canonical)
        found.append((route.method, path))
    return found


def test_the_route_list_is_the_applications() -> None:
    found = routes()
    assert ("GET", "/") in found and ("GET", "/ws") in found
    assert ("POST", "/api/sessions") in found and ("HEAD", "/api/sessions") in found
    assert len(found) >= 12


async def _status(session: aiohttp.ClientSession, method: str, url: str,
                  **kwargs: Any) -> tuple[int, dict[str, Any] | None]:
    async with session.request(method, url, allow_redirects=False, **kwargs) as response:
        body = await response.read()
        if response.content_type == "application/json" and body:
            return response.status, await response.json()
        return response.status, None


def test_every_route_refuses_a_request_without_a_valid_token(served: Served) -> None:
    links = served.links
    base = links.base

    async def matrix() -> None:
        async with client_session() as session:
            for method, path in [*routes(), ("GET", "/no-such-route"),
                                 ("POST", "/no-such-route")]:
                for auth in ({}, {"params": {"token": "x" * 32}},
                             {"headers": {"Authorization": "Bearer " + links.token[:-1]}},
                             {"cookies": {COOKIE: "y" * 32}}):
                    status, body = await _status(session, method, base + path, **auth)
                    assert status == 403, (method, path, auth, status)
                    if method != "HEAD":
                        assert body is not None and body["error"] == "FORBIDDEN"
                # the right token passes the guard (whatever the handler then says)
                status, _ = await _status(session, method, base + path,
                                          headers={"Authorization": "Bearer " + links.token,
                                                   "Origin": base})
                assert status != 403, (method, path, status)

    run(matrix())


def test_a_read_only_link_looks_and_never_changes_anything(served: Served) -> None:
    links = served.links

    async def check() -> None:
        async with client_session(Authorization="Bearer " + links.read_only_token) as session:
            for method, path in routes():
                status, body = await _status(session, method, links.base + path)
                if method in CHANGES:
                    assert status == 403, (method, path)
                    assert body is not None and body["message"] == "this link is read-only"
                else:
                    assert status != 403, (method, path, body)
            status, body = await _status(session, "GET", links.base + "/api/sessions")
            assert status == 200 and body is not None
            assert [s["name"] for s in body["sessions"]] == ["proj"]

    run(check())
    assert served.coop("ls", "--json").stdout.count('"name": "proj"') == 1  # nothing changed


def test_the_first_visit_moves_the_token_into_a_cookie(served: Served) -> None:
    links = served.links

    async def visit() -> None:
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
            async with session.get(f"{links.base}/?token={links.token}&view=split",
                                   allow_redirects=False) as response:
                assert response.status == 303
                assert response.headers["Location"] == "/?view=split"
                cookie = response.cookies[COOKIE]
                assert cookie.value == links.token
                assert cookie["httponly"] is True and cookie["samesite"] == "Strict"
                assert cookie["path"] == "/"
                assert response.headers["Referrer-Policy"] == "no-referrer"
            # the cookie alone opens the page, the assets' route and the API
            async with session.get(f"{links.base}/?view=split") as response:
                assert response.status == 200
                assert response.content_type == "text/html"
                assert response.headers["X-Frame-Options"] == "DENY"
            async with session.get(f"{links.base}/assets/none.js") as response:
                assert response.status == 404
            async with session.get(f"{links.base}/assets/../../etc/passwd") as response:
                assert response.status in (403, 404)
            async with session.get(f"{links.base}/api/sessions") as response:
                assert response.status == 200
        # the API and the WebSocket keep a token in their URL: no redirect there
        async with client_session() as session:
            status, body = await _status(session, "GET",
                                         f"{links.base}/api/sessions?token={links.token}")
            assert status == 200 and body is not None and body["ok"] is True

    run(visit())


def test_a_foreign_host_or_origin_is_refused(served: Served) -> None:
    links = served.links
    port = links.port
    bearer = {"Authorization": "Bearer " + links.token}

    async def check() -> None:
        async with client_session() as session:
            for host in (f"evil.example:{port}", f"rebind.evil.example:{port}", "", "a:b"):
                status, body = await _status(session, "GET", links.base + "/api/sessions",
                                             headers={**bearer, "Host": host})
                assert status == 403 and body is not None, host
                assert "host name" in body["message"]
            for host in (f"localhost:{port}", f"127.0.0.1:{port}"):
                status, _ = await _status(session, "GET", links.base + "/api/sessions",
                                          headers={**bearer, "Host": host})
                assert status == 200, host
            url = f"{links.base}/ws?session=proj&token={links.token}"
            for origin in ("http://evil.example", f"http://localhost:{port + 1}", "null"):
                try:
                    await session.ws_connect(url, origin=origin)
                except aiohttp.WSServerHandshakeError as exc:
                    assert exc.status == 403, origin
                else:
                    raise AssertionError(f"a page of {origin} opened a terminal")
                status, _ = await _status(session, "POST", links.base + "/api/sessions",
                                          headers={**bearer, "Origin": origin}, json={})
                assert status == 403, origin
            async with session.ws_connect(url, origin=links.base) as ws:
                assert (await ws.receive_json())["event"] == "attached"
            async with session.ws_connect(url) as ws:  # no Origin: not a browser page
                assert (await ws.receive_json())["event"] == "attached"

    run(check())


def test_unknown_routes_are_guarded_like_the_others(served: Served) -> None:
    """The guard stands before routing: a path the router lacks is 403 without a token
    and 404 with one, so nobody learns what exists without the token."""
    links = served.links

    async def check() -> None:
        async with client_session() as session:
            assert (await _status(session, "GET", links.base + "/secret"))[0] == 403
            status, _ = await _status(session, "GET", links.base + "/secret",
                                      params={"token": links.token})
            assert status in (303, 404)
            status, _ = await _status(session, "GET", links.base + "/api/secret",
                                      params={"token": links.token})
            assert status == 404

    run(check())


def test_the_application_is_only_what_build_app_makes() -> None:
    app = build_app(context=None)  # type: ignore[arg-type]
    assert isinstance(app, web.Application)
    assert [m.__name__ for m in app.middlewares] == ["guard"]
