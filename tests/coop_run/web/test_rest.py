"""The REST API through the real daemon (SPEC 8): sessions listed, created, killed, shells
opened and closed, the agent restarted, each error with its IPC code and HTTP status; the
session list pushed on the event stream as it changes, never polled."""

from __future__ import annotations

import asyncio
import io
import json
from typing import Any

import aiohttp
from web_support import Served, client_session, make_workspace, run

from support.procs import wait_for

TIMEOUT = 20.0


class Api:
    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session = session
        self.base = base

    async def __call__(self, method: str, path: str,
                       body: Any = None, data: bytes | None = None) -> tuple[int, dict[str, Any]]:
        kwargs: dict[str, Any] = ({"json": body} if body is not None
                                  else {"data": None if data is None else io.BytesIO(data)})
        async with self.session.request(method, self.base + path, **kwargs) as response:
            return response.status, await response.json()


def refused(answer: tuple[int, dict[str, Any]], status: int, code: str) -> str:
    got, body = answer
    assert (got, body["ok"], body["error"]) == (status, False, code), answer
    assert "\n" not in body["message"]
    return str(body["message"])


def test_sessions_are_listed_created_and_killed(served: Served) -> None:
    coop = served.coop
    other = make_workspace(coop, "other")
    unbuilt = make_workspace(coop, "unbuilt", build=False)

    async def check() -> None:
        async with client_session(Authorization="Bearer " + served.links.token) as session:
            api = Api(session, served.links.base)
            status, body = await api("GET", "/api/sessions")
            assert status == 200 and [s["name"] for s in body["sessions"]] == ["proj"]
            assert body["sessions"][0]["ptys"][0]["role"] == "agent"
            status, body = await api("POST", "/api/sessions",
                                     {"workspace": str(other), "name": "web1"})
            assert (status, body) == (200, {"ok": True, "name": "web1", "created": True,
                                            "warnings": []})
            refused(await api("POST", "/api/sessions",
                              {"workspace": str(served.workspace), "name": "web1"}),
                    409, "SESSION_EXISTS")
            refused(await api("POST", "/api/sessions", {"workspace": str(unbuilt)}),
                    409, "ROOTFS_NOT_BUILT")
            refused(await api("POST", "/api/sessions", {"workspace": "relative"}),
                    400, "INVALID_COMMAND")
            refused(await api("POST", "/api/sessions", {"workspace": 7}), 400,
                    "INVALID_COMMAND")
            # only what a page may choose: no Coopfile overrides, no environment
            message = refused(await api("POST", "/api/sessions",
                                        {"workspace": str(other),
                                         "overrides": {"network": {"mode": "host"}}}),
                              400, "INVALID_COMMAND")
            assert "overrides" in message
            refused(await api("POST", "/api/sessions", data=b"{not json"), 400,
                    "MALFORMED_MESSAGE")
            refused(await api("POST", "/api/sessions", data=b"[1]"), 400, "MALFORMED_MESSAGE")
            refused(await api("POST", "/api/sessions",
                              data=json.dumps({"workspace": "x" * (2 << 20)}).encode()),
                    413, "MESSAGE_TOO_LARGE")
            status, body = await api("DELETE", "/api/sessions/web1?force=1")
            assert (status, body) == (200, {"ok": True, "killed": ["web1"]})
            refused(await api("DELETE", "/api/sessions/web1"), 404, "SESSION_NOT_FOUND")

    run(check())
    listing = coop("ls").stdout
    assert "proj" in listing and "web1" not in listing


def test_an_untrusted_coopfile_is_refused_from_the_web(served: Served) -> None:
    """There is no terminal to ask: the daemon's trust check refuses it, as it refuses
    a create of a CLI without one, with everything the file asks."""
    coop = served.coop
    wide = make_workspace(coop, "wide")
    (wide / "coop.toml").write_text((wide / "coop.toml").read_text().replace(
        'mode = "none"', 'mode = "host"'))
    assert coop("init", "-q", cwd=wide).returncode == 0

    async def check() -> None:
        async with client_session(Authorization="Bearer " + served.links.token) as session:
            answer = await Api(session, served.links.base)("POST", "/api/sessions",
                                                           {"workspace": str(wide)})
            refused(answer, 403, "UNTRUSTED_COOPFILE")
            asks = answer[1]["untrusted"]["asks"]
            assert [(a["kind"], a["target"]) for a in asks] == [("network", "host")]

    run(check())
    assert "wide" not in coop("ls").stdout


def test_shells_are_opened_and_closed_and_the_agent_restarted(served: Served) -> None:
    coop = served.coop

    def states() -> list[str]:
        sessions = json.loads(coop("ls", "--json").stdout)
        return [p["state"] for p in sessions[0]["ptys"]]

    async def check() -> None:
        async with client_session(Authorization="Bearer " + served.links.token) as session:
            api = Api(session, served.links.base)
            status, body = await api("POST", "/api/sessions/proj/shell",
                                     {"cols": 100, "rows": 30})
            assert (status, body) == (200, {"ok": True, "pty": 1})
            assert states() == ["running", "running"]
            status, body = await api("DELETE", "/api/sessions/proj/ptys/1")
            assert (status, body) == (200, {"ok": True})
            await asyncio.to_thread(wait_for, lambda: states()[1] == "exited", TIMEOUT,
                                    "the shell to end")
            refused(await api("DELETE", "/api/sessions/proj/ptys/0"), 400, "INVALID_COMMAND")
            refused(await api("DELETE", "/api/sessions/proj/ptys/9"), 404, "PTY_NOT_FOUND")
            refused(await api("DELETE", "/api/sessions/proj/ptys/one"), 400,
                    "INVALID_COMMAND")
            refused(await api("POST", "/api/sessions/proj/shell", {"shell": "zsh"}), 400,
                    "INVALID_COMMAND")
            refused(await api("POST", "/api/sessions/nope/shell", {}), 404,
                    "SESSION_NOT_FOUND")
            status, body = await api("POST", "/api/sessions/proj/restart")
            assert (status, body) == (200, {"ok": True, "name": "proj"})
            refused(await api("POST", "/api/sessions/nope/restart"), 404,
                    "SESSION_NOT_FOUND")

    run(check())


def test_the_session_list_is_pushed_as_it_changes(served: Served) -> None:
    coop = served.coop
    other = make_workspace(coop, "other")
    links = served.links

    async def next_list(ws: aiohttp.ClientWebSocketResponse,
                        until: Any) -> list[dict[str, Any]]:
        while True:
            message = await asyncio.wait_for(ws.receive_json(), TIMEOUT)
            assert message["event"] == "sessions"
            if until(message["sessions"]):
                return list(message["sessions"])

    def names(sessions: list[dict[str, Any]]) -> list[str]:
        return sorted(s["name"] for s in sessions)

    async def check() -> None:
        async with client_session() as session:
            url = f"{links.base}/api/events?token={links.read_only_token}"
            async with session.ws_connect(url) as ws:
                first = await next_list(ws, lambda s: True)
                assert names(first) == ["proj"]
                api = Api(session, links.base)
                session.headers["Authorization"] = "Bearer " + links.token
                await api("POST", "/api/sessions", {"workspace": str(other), "name": "web2"})
                await next_list(ws, lambda s: names(s) == ["proj", "web2"])
                status, _ = await api("POST", "/api/sessions/web2/shell", {})
                assert status == 200
                changed = await next_list(ws, lambda s: any(
                    len(e["ptys"]) == 2 for e in s if e["name"] == "web2"))
                assert [p["role"] for e in changed if e["name"] == "web2"
                        for p in e["ptys"]] == ["agent", "shell"]
                # a change made elsewhere (the CLI) arrives the same way
                assert coop("kill", "-f", "web2").returncode == 0
                await next_list(ws, lambda s: names(s) == ["proj"])

    run(check())
