"""The supervisor <-> sandbox init channel: frames, messages, and passing descriptors.

The channel is a ``SOCK_SEQPACKET`` socketpair made before the sandbox forks, so each
``sendmsg`` is one record and descriptors passed with ``SCM_RIGHTS`` arrive with the
message they belong to. A record is a frame: 4-byte big-endian length, then a UTF-8 JSON
object (the length lets the same framing run over a stream, and catches truncation).

Supervisor -> init requests (each carries an ``id`` echoed by the reply)::

    {"op": "spawn", "id", "argv", "env", "cwd", "pty", "cols", "rows", "stdio"}
        stdio: how many descriptors (0 or 3: stdin, stdout, stderr) ride with a non-PTY spawn
    {"op": "signal", "id", "pid", "signo"}
    {"op": "shutdown", "id", "grace"}

Init -> supervisor::

    {"op": "ready", "pid": <init's pid as seen inside>}      once, after pivot_root
    {"op": "spawned", "id", "pid"} (+ the PTY master descriptor when pty was asked)
    {"op": "ok", "id"}  /  {"op": "error", "id", "message"}
    {"op": "exited", "pid", "code", "signal"}                 for every process it spawned
    {"op": "failed", "message"}                               setup failed; the init exits

The supervisor learns host pids from ``SCM_CREDENTIALS``: the init stamps a ``spawned``
reply with the child's pid, and the kernel translates it into the receiver's namespace.

Everything above the "I/O" marker is pure; the init imports this module before
``pivot_root``, so it may not import anything lazily.
"""

from __future__ import annotations

import array
import json
import os
import socket
import struct
from dataclasses import dataclass
from typing import Any

MAX_FRAME = 128 * 1024  # socket buffers hold this; env and argv of a spawn stay far below
MAX_FDS = 3
_HEADER = struct.Struct(">I")
_UCRED = struct.Struct("iII")  # pid, uid, gid


class ProtocolError(ValueError):
    """A frame or message that does not follow the protocol (the sender is buggy)."""


def encode(message: dict[str, Any]) -> bytes:
    """One frame for ``message``."""
    body = json.dumps(message, separators=(",", ":")).encode()
    if len(body) > MAX_FRAME:
        raise ProtocolError(f"message of {len(body)} bytes exceeds {MAX_FRAME}")
    return _HEADER.pack(len(body)) + body


def decode(frame: bytes) -> dict[str, Any]:
    """The message in one complete frame (a seqpacket record)."""
    decoder = FrameDecoder()
    decoder.feed(frame)
    message = decoder.next()
    if message is None or decoder.pending:
        raise ProtocolError(f"frame of {len(frame)} bytes is not exactly one message")
    return message


class FrameDecoder:
    """Feed bytes as they arrive, take whole messages out with ``next()``."""

    def __init__(self) -> None:
        self._buf = bytearray()

    @property
    def pending(self) -> int:
        """Bytes received that do not yet form a whole frame."""
        return len(self._buf)

    def feed(self, data: bytes) -> None:
        self._buf += data

    def next(self) -> dict[str, Any] | None:
        """The next whole message, or None until more bytes arrive."""
        if len(self._buf) < _HEADER.size:
            return None
        (length,) = _HEADER.unpack_from(self._buf)
        if length > MAX_FRAME:
            raise ProtocolError(f"frame length {length} exceeds {MAX_FRAME}")
        if len(self._buf) < _HEADER.size + length:
            return None
        body = bytes(self._buf[_HEADER.size : _HEADER.size + length])
        del self._buf[: _HEADER.size + length]
        try:
            message = json.loads(body.decode())
        except (UnicodeDecodeError, ValueError) as exc:
            raise ProtocolError(f"frame is not UTF-8 JSON: {exc}") from exc
        if not isinstance(message, dict) or not isinstance(message.get("op"), str):
            raise ProtocolError("message is not a JSON object with a string 'op'")
        return message


# --- requests, checked -----------------------------------------------------------------


@dataclass(frozen=True)
class SpawnRequest:
    id: int
    argv: tuple[str, ...]
    env: dict[str, str]
    cwd: str | None
    pty: bool
    cols: int
    rows: int
    stdio: int


@dataclass(frozen=True)
class SignalRequest:
    id: int
    pid: int
    signo: int


@dataclass(frozen=True)
class ShutdownRequest:
    id: int
    grace: float


Request = SpawnRequest | SignalRequest | ShutdownRequest


def _int(message: dict[str, Any], key: str, low: int, high: int) -> int:
    value = message.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ProtocolError(f"{message.get('op')}: {key!r} must be an integer in {low}..{high}")
    return value


def parse_request(message: dict[str, Any]) -> Request:
    """A request from the supervisor, checked field by field."""
    op = message.get("op")
    rid = _int(message, "id", 0, 2**53)
    if op == "spawn":
        argv = message.get("argv")
        if (not isinstance(argv, list) or not argv
                or not all(isinstance(a, str) and "\0" not in a for a in argv)):
            raise ProtocolError("spawn: 'argv' must be a non-empty list of strings")
        env = message.get("env", {})
        if not isinstance(env, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and k and "=" not in k
            and "\0" not in k + v for k, v in env.items()
        ):
            raise ProtocolError("spawn: 'env' must map names (no '=') to strings")
        cwd = message.get("cwd")
        if cwd is not None and (not isinstance(cwd, str) or not cwd.startswith("/")):
            raise ProtocolError("spawn: 'cwd' must be an absolute path or null")
        pty = message.get("pty", False)
        if not isinstance(pty, bool):
            raise ProtocolError("spawn: 'pty' must be a boolean")
        stdio = _int(message, "stdio", 0, MAX_FDS) if "stdio" in message else 0
        if stdio not in (0, MAX_FDS) or (pty and stdio):
            raise ProtocolError("spawn: 'stdio' is 0 or 3, and 0 with a PTY")
        return SpawnRequest(
            id=rid, argv=tuple(argv), env=dict(env), cwd=cwd, pty=pty,
            cols=_int(message, "cols", 1, 65535) if "cols" in message else 80,
            rows=_int(message, "rows", 1, 65535) if "rows" in message else 24,
            stdio=stdio,
        )
    if op == "signal":
        return SignalRequest(id=rid, pid=_int(message, "pid", 1, 2**22),
                             signo=_int(message, "signo", 0, 64))
    if op == "shutdown":
        grace = message.get("grace", 5.0)
        if isinstance(grace, bool) or not isinstance(grace, int | float) or not (
                0 <= grace <= 3600):
            raise ProtocolError("shutdown: 'grace' must be a number of seconds in 0..3600")
        return ShutdownRequest(id=rid, grace=float(grace))
    raise ProtocolError(f"unknown request op {op!r}")


def exited_event(pid: int, status: int) -> dict[str, Any]:
    """The ``exited`` event for a wait status: code for an exit, signal for a kill."""
    if status & 0x7F:
        return {"op": "exited", "pid": pid, "code": None, "signal": status & 0x7F}
    return {"op": "exited", "pid": pid, "code": (status >> 8) & 0xFF, "signal": None}


# --- I/O -------------------------------------------------------------------------------


def send(sock: socket.socket, message: dict[str, Any], fds: tuple[int, ...] = (),
         cred_pid: int | None = None) -> None:
    """Send one message with optional descriptors and an explicit credentials pid."""
    ancillary = []
    if fds:
        ancillary.append((socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes()))
    if cred_pid is not None:
        ancillary.append((socket.SOL_SOCKET, socket.SCM_CREDENTIALS,
                          _UCRED.pack(cred_pid, os.getuid(), os.getgid())))
    sock.sendmsg([encode(message)], ancillary)


@dataclass
class Received:
    message: dict[str, Any]
    fds: list[int]
    cred_pid: int | None


def recv(sock: socket.socket) -> Received | None:
    """One message (None at end of stream). Descriptors received are the caller's to close."""
    space = socket.CMSG_SPACE(MAX_FDS * 4) + socket.CMSG_SPACE(_UCRED.size)
    data, ancdata, flags, _ = sock.recvmsg(MAX_FRAME + _HEADER.size, space)
    fds: list[int] = []
    cred_pid = None
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            usable = len(payload) - len(payload) % 4
            fds.extend(array.array("i", payload[:usable]))
        elif level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
            cred_pid = _UCRED.unpack_from(payload)[0]
    if not data and not fds:
        return None
    if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
        for fd in fds:
            os.close(fd)
        raise ProtocolError("message or its descriptors were truncated")
    try:
        message = decode(data)
    except ProtocolError:
        for fd in fds:
            os.close(fd)
        raise
    return Received(message=message, fds=fds, cred_pid=cred_pid)
