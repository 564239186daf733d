"""The protocol's messages: validation, and a contract that pins every message's keys.

The contract table is the promise to clients (the CLI, the web UI, the tunnel, scripts):
changing a key means changing this table on purpose, and bumping VERSION if it breaks one.
"""

from __future__ import annotations

from typing import Any

import pytest

from coop_run.errors import ProtocolError
from coop_run.ipc import protocol

# message builder -> (example call, exact keys)
CONTRACT: dict[str, tuple[dict[str, Any], set[str]]] = {
    "hello": (protocol.hello(), {"version"}),
    "handshake_ok": (protocol.handshake_ok(), {"version", "ok"}),
    "error": (protocol.error("SESSION_NOT_FOUND", "no session x"), {"ok", "error", "message"}),
    "ok": (protocol.ok(), {"ok"}),
    "ls": (protocol.ls_response([]), {"ok", "sessions"}),
    "status": (protocol.status_response(1, 2.0, 3, 4),
               {"ok", "pid", "version", "uptime", "sessions", "clients"}),
    "shutdown": (protocol.shutdown_response(5), {"ok", "pid"}),
    "pty_exited": (protocol.pty_exited("agent", 0), {"event", "pty", "code", "signal"}),
    "pty_restarting": (protocol.pty_restarting("agent", 1.0, 2),
                       {"event", "pty", "delay", "attempt"}),
    "detached": (protocol.detached(), {"event"}),
    "lagged": (protocol.lagged("agent", 4096), {"event", "pty", "bytes"}),
}


@pytest.mark.parametrize("name", sorted(CONTRACT))
def test_contract_keys(name: str) -> None:
    message, keys = CONTRACT[name]
    assert set(message) == keys


def test_contract_values() -> None:
    assert protocol.hello() == {"version": 1}
    assert protocol.handshake_ok() == {"version": 1, "ok": True}
    assert protocol.detached() == {"event": "detached"}
    assert protocol.error("X", "a\nb") == {"ok": False, "error": "X", "message": "a"}
    assert protocol.ok(sessions=[]) == {"ok": True, "sessions": []}
    assert protocol.pty_exited("agent", 3)["event"] == "pty_exited"
    assert protocol.lagged("p", 9)["bytes"] == 9


def test_every_event_has_a_builder_in_the_contract() -> None:
    built = {m["event"] for m, _ in CONTRACT.values() if "event" in m}
    assert built == protocol.EVENTS


def test_error_codes_of_the_spec() -> None:
    spec = {"SESSION_NOT_FOUND", "SESSION_EXISTS", "PTY_NOT_FOUND", "INVALID_COMMAND",
            "VERSION_MISMATCH", "MESSAGE_TOO_LARGE", "ROOTFS_NOT_BUILT", "INVALID_COOPFILE"}
    assert spec <= protocol.ERROR_CODES


def test_commands_of_the_spec() -> None:
    assert {"create", "attach", "shell", "ls", "kill", "serve", "tunnel", "shutdown",
            "status", "logs", "restart"} <= set(protocol.COMMANDS)


def test_handshake() -> None:
    protocol.check_hello({"version": 1})
    for bad in ({"version": 2}, {"version": "1"}, {"version": True}, {}, {"cmd": "ls"},
                {"version": 1, "extra": 1}):
        with pytest.raises(ProtocolError) as info:
            protocol.check_hello(bad)
        assert info.value.code == "VERSION_MISMATCH"
    protocol.check_handshake_reply({"version": 1, "ok": True})
    with pytest.raises(ProtocolError) as info:
        protocol.check_handshake_reply({"ok": False, "error": "VERSION_MISMATCH",
                                        "message": "nope"})
    assert info.value.message == "nope"


@pytest.mark.parametrize("message", [
    {"cmd": "ls"},
    {"cmd": "create", "workspace": "/w", "name": "n", "detach": True, "overrides": {}},
    {"cmd": "create", "workspace": "/w", "config": "/home/u/.config/coop/default.toml",
     "env": {"A": "b"}, "cols": 80, "rows": 24},
    {"cmd": "attach", "session": "n", "cols": 80, "rows": 24, "offset": 0},
    {"cmd": "kill", "all": True, "force": False},
    {"cmd": "serve", "port": 8888, "host": "127.0.0.1"},
    {"cmd": "shutdown"},
])
def test_valid_commands(message: dict[str, Any]) -> None:
    command = protocol.parse_command(message)
    assert command.name == message["cmd"]
    assert dict(command.fields) == {k: v for k, v in message.items() if k != "cmd"}


@pytest.mark.parametrize(("message", "words"), [
    ({}, "missing field 'cmd'"),
    ({"cmd": 3}, "'cmd' must be a string"),
    ({"cmd": "frobnicate"}, "unknown command 'frobnicate'"),
    ({"cmd": "create"}, "create: missing field 'workspace'"),
    ({"cmd": "create", "workspace": 7}, "create: field 'workspace' must be a string"),
    ({"cmd": "create", "workspace": "/w", "config": 7},
     "create: field 'config' must be a string"),
    ({"cmd": "create", "workspace": "/w", "overrides": []},
     "create: field 'overrides' must be an object"),
    ({"cmd": "attach", "cols": "80"}, "attach: field 'cols' must be an integer"),
    ({"cmd": "attach", "cols": True}, "attach: field 'cols' must be an integer"),
    ({"cmd": "kill", "force": 1}, "kill: field 'force' must be a boolean"),
    ({"cmd": "ls", "verbose": True}, "ls: unknown field 'verbose'"),
    ({"cmd": "x" * 5000}, "unknown command"),
])
def test_invalid_commands(message: dict[str, Any], words: str) -> None:
    with pytest.raises(ProtocolError) as info:
        protocol.parse_command(message)
    assert info.value.code == "INVALID_COMMAND"
    assert words in info.value.message
    assert "\n" not in info.value.message
    assert len(info.value.message) < 120


def test_controls() -> None:
    assert protocol.parse_control({"type": "resize", "cols": 80, "rows": 24}).name == "resize"
    assert protocol.parse_control({"type": "detach"}).name == "detach"
    for bad in ({"type": "resize", "cols": 80}, {"type": "nope"}, {}):
        with pytest.raises(ProtocolError):
            protocol.parse_control(bad)
