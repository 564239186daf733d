"""Who may use the web server, as pure rules: tokens, where a request presents one, the
Host check against DNS rebinding and the Origin check (SPEC 8, 12)."""

from __future__ import annotations

import ipaddress

import pytest

from coop_run.web.auth import (
    COOKIE,
    HostCheck,
    Tokens,
    host_problem,
    new_token,
    presented_token,
    same_origin,
    split_host,
    token_problem,
)
from coop_run.web.control import HEARTBEAT, heartbeat, settings_problem


def test_tokens_are_random_long_and_usable_in_a_url() -> None:
    tokens = {new_token() for _ in range(50)}
    assert len(tokens) == 50
    for token in tokens:
        assert len(token) * 6 >= 128  # base64url: 6 bits a character
        assert token_problem(token) is None


@pytest.mark.parametrize(("token", "words"), [
    ("short", "16 to 256 characters"),
    ("x" * 257, "16 to 256 characters"),
    ("with space and more!", "only letters, digits"),
    ("a/b" * 6, "only letters, digits"),
])
def test_a_given_token_must_be_long_and_url_safe(token: str, words: str) -> None:
    problem = token_problem(token)
    assert problem is not None and words in problem


def test_both_tokens_are_recognised_and_nothing_else() -> None:
    tokens = Tokens("f" * 32, "r" * 32)
    assert tokens.access("f" * 32) == "full"
    assert tokens.access("r" * 32) == "read-only"
    for wrong in (None, "", "f" * 31, "f" * 33, "F" * 32, "r" * 32 + " "):
        assert tokens.access(wrong) is None
    assert tokens.redact(f"GET /{'f' * 32}?x={'r' * 32}") == "GET /***?x=***"
    with pytest.raises(ValueError, match="must differ"):
        Tokens("a" * 20, "a" * 20)


def test_an_explicit_token_wins_over_the_cookie() -> None:
    cookie = {COOKIE: "c"}
    assert presented_token({"token": "q"}, "Bearer h", cookie) == ("q", "query")
    assert presented_token({}, "Bearer h", cookie) == ("h", "header")
    assert presented_token({}, "bearer  h ", {}) == ("h", "header")
    assert presented_token({}, "Basic h", cookie) == ("c", "cookie")
    assert presented_token({"token": ""}, None, {}) == (None, None)


@pytest.mark.parametrize(("header", "parsed"), [
    ("127.0.0.1:8888", ("127.0.0.1", 8888)), ("LocalHost", ("localhost", None)),
    ("[::1]:80", ("::1", 80)), ("host.lan.:1", ("host.lan", 1)),
    ("[::1", None), ("a:b", None), ("a:70000", None), ("", None), ("[::1]x", None),
])
def test_host_headers_are_split(header: str, parsed: tuple[str, int | None] | None) -> None:
    assert split_host(header) == parsed


def addresses() -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    return [ipaddress.ip_address(a) for a in ("127.0.0.1", "192.168.1.5", "fd00::2", "::1")]


def test_a_loopback_server_answers_loopback_names_only() -> None:
    check = HostCheck("127.0.0.1", hostname="box", local_addresses=addresses)
    for host in ("127.0.0.1:8888", "localhost:8888", "[::1]:8888", "127.0.0.2"):
        assert check.allows(host), host
    # DNS rebinding: a name of the attacker's that resolves to 127.0.0.1
    for host in ("evil.example:8888", "box:8888", "192.168.1.5:8888", None, "", "[::1"):
        assert not check.allows(host), host


def test_a_server_on_every_address_answers_this_machines_names() -> None:
    check = HostCheck("0.0.0.0", hostname="Box", local_addresses=addresses)
    for host in ("192.168.1.5:8888", "[fd00::2]:8888", "box:8888", "box.local",
                 "localhost", "127.0.0.1:8888"):
        assert check.allows(host), host
    for host in ("192.168.1.6:8888", "evil.example", "box.evil.example"):
        assert not check.allows(host), host


def test_a_server_on_one_address_answers_that_address() -> None:
    check = HostCheck("192.168.1.5", hostname="box", local_addresses=addresses)
    assert check.allows("192.168.1.5:8888") and check.allows("box")
    assert not check.allows("[fd00::2]:8888") and not check.allows("127.0.0.1:8888")
    named = HostCheck("box.lan", hostname="box", local_addresses=addresses)
    assert named.allows("box.lan:8888") and not named.allows("evil.example")


@pytest.mark.parametrize(("origin", "host", "same"), [
    ("http://127.0.0.1:8888", "127.0.0.1:8888", True),
    ("http://LOCALHOST:8888", "localhost:8888", True),
    ("http://[::1]:8888", "[::1]:8888", True),
    ("http://box", "box:80", True),
    ("http://127.0.0.1:8889", "127.0.0.1:8888", False),
    ("http://evil.example", "127.0.0.1:8888", False),
    ("null", "127.0.0.1:8888", False),
    ("file://", "127.0.0.1:8888", False),
    ("http://127.0.0.1:bad", "127.0.0.1:8888", False),
    ("http://127.0.0.1:8888", None, False),
])
def test_origin_must_be_the_server_itself(origin: str, host: str | None, same: bool) -> None:
    assert same_origin(origin, host) is same


def test_hosts_and_settings_are_checked_before_anything_binds() -> None:
    for good in ("127.0.0.1", "0.0.0.0", "::", "[::1]", "localhost", "my-box.lan"):
        assert host_problem(good) is None, good
    for bad in ("no such!", "-lead.example", "a" * 300, "", "x..y"):
        assert host_problem(bad) is not None, bad
    assert settings_problem("127.0.0.1", 70000) == "port 70000 is not from 0 to 65535"
    assert settings_problem("127.0.0.1", 8888, "short") is not None
    assert settings_problem("127.0.0.1", 0, new_token()) is None


def test_a_dead_phone_is_found_within_30_seconds() -> None:
    """aiohttp pings after ``heartbeat`` seconds of silence and gives up when no pong
    came within half of it."""
    assert HEARTBEAT * 1.5 < 30
    assert heartbeat({}) == HEARTBEAT
    assert heartbeat({"COOP_WEB_HEARTBEAT_SECONDS": "2"}) == 2.0
    for bad in ("0", "-1", "nope", "inf"):
        assert heartbeat({"COOP_WEB_HEARTBEAT_SECONDS": bad}) == HEARTBEAT
