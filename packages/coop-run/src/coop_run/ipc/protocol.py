"""The messages of the daemon socket (SPEC 6): version, commands, responses, events; pure.

Everything that crosses the socket is built or checked here, so the daemon, the CLI and
the tests share one definition, and a contract test pins the exact keys of each message.
Validation turns a decoded JSON object into a ``Command`` or raises ``ProtocolError`` with
a one-line message the daemon sends back as it is.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, NamedTuple

from coop_run.errors import ProtocolError

VERSION: Final = 1

# Error codes (SPEC 6 plus the ones the daemon needs).
SESSION_NOT_FOUND: Final = "SESSION_NOT_FOUND"
SESSION_EXISTS: Final = "SESSION_EXISTS"
PTY_NOT_FOUND: Final = "PTY_NOT_FOUND"
INVALID_COMMAND: Final = "INVALID_COMMAND"
VERSION_MISMATCH: Final = "VERSION_MISMATCH"
MESSAGE_TOO_LARGE: Final = "MESSAGE_TOO_LARGE"
MALFORMED_MESSAGE: Final = "MALFORMED_MESSAGE"
ROOTFS_NOT_BUILT: Final = "ROOTFS_NOT_BUILT"
INVALID_COOPFILE: Final = "INVALID_COOPFILE"
NOT_SUPPORTED: Final = "NOT_SUPPORTED"
INTERNAL_ERROR: Final = "INTERNAL_ERROR"

ERROR_CODES: Final = frozenset({
    SESSION_NOT_FOUND, SESSION_EXISTS, PTY_NOT_FOUND, INVALID_COMMAND, VERSION_MISMATCH,
    MESSAGE_TOO_LARGE, MALFORMED_MESSAGE, ROOTFS_NOT_BUILT, INVALID_COOPFILE, NOT_SUPPORTED,
    INTERNAL_ERROR,
})


class Field(NamedTuple):
    """One command field: its JSON type(s) and whether it must be present."""

    types: tuple[type, ...]
    required: bool = False

    def describe(self) -> str:
        return " or ".join(_TYPE_NAMES[t] for t in self.types)


_TYPE_NAMES: Final[Mapping[type, str]] = {
    str: "a string", int: "an integer", bool: "a boolean", dict: "an object", list: "a list",
}

_STR = Field((str,))
_INT = Field((int,))
_BOOL = Field((bool,))

# Every command and its fields (besides "cmd"). Unknown fields are refused so a typo in a
# client fails loudly instead of being ignored.
COMMANDS: Final[Mapping[str, Mapping[str, Field]]] = {
    "create": {
        "name": _STR, "workspace": Field((str,), required=True), "overrides": Field((dict,)),
        "detach": _BOOL, "cols": _INT, "rows": _INT, "env": Field((dict,)),
        "config": _STR,  # absolute path of the global Coopfile layer (--config)
    },
    "attach": {"session": _STR, "pty": _STR, "cols": _INT, "rows": _INT, "offset": _INT},
    "shell": {"session": _STR, "command": _STR, "cols": _INT, "rows": _INT},
    "ls": {},
    "kill": {"session": _STR, "force": _BOOL, "all": _BOOL},
    "serve": {"port": _INT, "host": _STR, "token": _STR, "stop": _BOOL},
    "tunnel": {"stun": _STR, "no_stun": _BOOL, "stop": _BOOL, "answer": _STR},
    "shutdown": {},
    "status": {},
    "logs": {"session": _STR, "pty": _STR, "lines": _INT},
    "restart": {"session": _STR},
}

# Stream-mode control messages a client may send, and their fields.
CLIENT_CONTROLS: Final[Mapping[str, Mapping[str, Field]]] = {
    "resize": {"cols": Field((int,), required=True), "rows": Field((int,), required=True)},
    "detach": {},
}

EVENTS: Final = frozenset({"pty_exited", "pty_restarting", "detached", "lagged"})


class Command(NamedTuple):
    """A validated command: its name and its fields (without ``cmd``)."""

    name: str
    fields: Mapping[str, Any]

    def get(self, key: str, default: Any = None) -> Any:
        return self.fields.get(key, default)


def _matches(value: Any, types: tuple[type, ...]) -> bool:
    # JSON true/false are Python bools, which are ints too: never accept one for the other.
    if isinstance(value, bool):
        return bool in types
    return isinstance(value, types)


def _check_fields(kind: str, message: Mapping[str, Any], spec: Mapping[str, Field],
                  skip: str) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for key, value in message.items():
        if key == skip:
            continue
        field = spec.get(key)
        if field is None:
            raise ProtocolError(f"{kind}: unknown field {key!r}", code=INVALID_COMMAND)
        if not _matches(value, field.types):
            raise ProtocolError(
                f"{kind}: field {key!r} must be {field.describe()}", code=INVALID_COMMAND
            )
        fields[key] = value
    for key, field in spec.items():
        if field.required and key not in fields:
            raise ProtocolError(f"{kind}: missing field {key!r}", code=INVALID_COMMAND)
    return fields


def parse_command(message: Mapping[str, Any]) -> Command:
    """Check a decoded request against ``COMMANDS``; raises ``ProtocolError``."""
    name = message.get("cmd")
    if name is None:
        raise ProtocolError("missing field 'cmd'", code=INVALID_COMMAND)
    if not isinstance(name, str):
        raise ProtocolError("field 'cmd' must be a string", code=INVALID_COMMAND)
    spec = COMMANDS.get(name)
    if spec is None:
        shown = name if len(name) <= 40 else name[:40] + "..."
        raise ProtocolError(f"unknown command {shown!r}", code=INVALID_COMMAND)
    return Command(name, _check_fields(name, message, spec, "cmd"))


def parse_control(message: Mapping[str, Any]) -> Command:
    """Check a client's stream-mode control message (``resize``, ``detach``)."""
    name = message.get("type")
    if not isinstance(name, str) or name not in CLIENT_CONTROLS:
        raise ProtocolError("unknown control message", code=INVALID_COMMAND)
    return Command(name, _check_fields(name, message, CLIENT_CONTROLS[name], "type"))


# --- handshake -------------------------------------------------------------------------

def hello() -> dict[str, Any]:
    """The client's first frame."""
    return {"version": VERSION}


def handshake_ok() -> dict[str, Any]:
    return {"version": VERSION, "ok": True}


def check_hello(message: Mapping[str, Any]) -> None:
    """Accept only ``{"version": 1}``; raises ``ProtocolError(VERSION_MISMATCH)``."""
    version = message.get("version")
    if set(message) != {"version"} or isinstance(version, bool) or not isinstance(version, int):
        raise ProtocolError(
            f'expected the handshake {{"version": {VERSION}}} as the first message',
            code=VERSION_MISMATCH,
        )
    if version != VERSION:
        raise ProtocolError(
            f"protocol version {version} is not supported (this daemon speaks {VERSION})",
            code=VERSION_MISMATCH,
        )


def check_handshake_reply(message: Mapping[str, Any]) -> None:
    """The client's check of the daemon's answer; raises ``ProtocolError``."""
    if message.get("ok") is True and message.get("version") == VERSION:
        return
    code = message.get("error")
    text = message.get("message")
    raise ProtocolError(
        str(text) if isinstance(text, str) else "the daemon refused the handshake",
        code=code if isinstance(code, str) else VERSION_MISMATCH,
    )


# --- responses -------------------------------------------------------------------------

def ok(**fields: Any) -> dict[str, Any]:
    """``{"ok": true, ...fields}``."""
    return {"ok": True, **fields}


def error(code: str, message: str) -> dict[str, Any]:
    """``{"ok": false, "error": CODE, "message": ...}``; ``message`` is one line."""
    line = message.splitlines()[0] if message else code
    return {"ok": False, "error": code, "message": line}


def error_from(exc: ProtocolError) -> dict[str, Any]:
    return error(exc.code, exc.message)


def ls_response(sessions: list[dict[str, Any]]) -> dict[str, Any]:
    return ok(sessions=sessions)


def status_response(pid: int, uptime: float, sessions: int, clients: int) -> dict[str, Any]:
    return ok(pid=pid, version=VERSION, uptime=round(uptime, 3), sessions=sessions,
              clients=clients)


def shutdown_response(pid: int) -> dict[str, Any]:
    return ok(pid=pid)


# --- events (stream mode, tag 0x01) -------------------------------------------------------

def pty_exited(pty: str, code: int | None, signal: int | None = None) -> dict[str, Any]:
    """The PTY's process ended with exit ``code`` (or was killed by ``signal``)."""
    return {"event": "pty_exited", "pty": pty, "code": code, "signal": signal}


def pty_restarting(pty: str, delay: float, attempt: int) -> dict[str, Any]:
    return {"event": "pty_restarting", "pty": pty, "delay": delay, "attempt": attempt}


def detached() -> dict[str, Any]:
    """Sent when the daemon lets go of an attached client (shutdown, kill)."""
    return {"event": "detached"}


def lagged(pty: str, dropped: int) -> dict[str, Any]:
    """The client fell behind and ``dropped`` bytes of output were not sent to it."""
    return {"event": "lagged", "pty": pty, "bytes": dropped}
