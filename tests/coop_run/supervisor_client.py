"""A blocking test client for coop's sockets (a supervisor's, or the daemon's: the same
handshake, commands and stream mode), as the web UI or the tunnel would use them."""

from __future__ import annotations

import os
import select
import socket
import struct
import time
from pathlib import Path
from typing import Any

from coop_run.ipc.framing import (
    Control,
    Data,
    StreamDecoder,
    encode_control,
    encode_data,
    encode_message,
    parse_json_object,
)

TIMEOUT = 15.0


def recv_exact(sock: socket.socket, size: int, timeout: float = TIMEOUT) -> bytes:
    data = b""
    deadline = time.monotonic() + timeout
    while len(data) < size:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([sock], [], [], remaining)[0]:
            raise AssertionError(f"no reply within {timeout}s")
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def recv_message(sock: socket.socket, timeout: float = TIMEOUT) -> dict[str, Any]:
    (size,) = struct.unpack(">I", recv_exact(sock, 4, timeout))
    value = parse_json_object(recv_exact(sock, size, timeout))
    assert isinstance(value, dict), value
    return value


def connect(path: Path, *, hello: bool = True) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(os.fsencode(path))
        if hello:
            sock.sendall(encode_message({"version": 1}))
            assert recv_message(sock) == {"version": 1, "ok": True}
    except BaseException:
        sock.close()
        raise
    return sock


def request(path: Path, message: dict[str, Any]) -> dict[str, Any]:
    with connect(path) as sock:
        sock.sendall(encode_message(message))
        return recv_message(sock)


def info(path: Path) -> dict[str, Any]:
    reply = request(path, {"cmd": "info"})
    assert reply["ok"] is True, reply
    return reply


class Stream:
    """One attached client; ``start`` is the offset of its first byte."""

    def __init__(self, sock: socket.socket, response: dict[str, Any]) -> None:
        assert response.get("ok") is True, response
        self.sock = sock
        self.response = response
        self.start = int(response["offset"])
        self.output = bytearray()
        self.events: list[dict[str, Any]] = []
        self.items: list[bytes | dict[str, Any]] = []
        self.closed = False
        self._decoder = StreamDecoder()

    @classmethod
    def open(cls, path: Path, cmd: str = "attach", **fields: Any) -> Stream:
        sock = connect(path)
        sock.sendall(encode_message({"cmd": cmd, **fields}))
        return cls(sock, recv_message(sock))

    @property
    def offset(self) -> int:
        lost = sum(int(e["bytes"]) for e in self.events if e.get("event") == "lagged")
        return self.start + len(self.output) + lost

    def pump(self, timeout: float) -> bool:
        """Read what arrives within ``timeout``; False once the stream has ended."""
        if self.closed:
            return False
        if not select.select([self.sock], [], [], timeout)[0]:
            return True
        data = self.sock.recv(1 << 20)
        if not data:
            self.closed = True
            return False
        for item in self._decoder.feed(data):
            if isinstance(item, Data):
                self.output += item.data
                self.items.append(item.data)
            elif isinstance(item, Control):
                self.events.append(item.message)
                self.items.append(item.message)
            else:
                raise AssertionError(f"bad frame: {item}")
        return True

    def wait(self, predicate: Any, what: str, timeout: float = TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"timed out waiting for {what}; output tail "
                                     f"{bytes(self.output[-400:])!r}, events {self.events}")
            if not self.pump(min(remaining, 0.5)) and not predicate():
                raise AssertionError(f"stream ended waiting for {what}")

    def wait_output(self, needle: bytes, timeout: float = TIMEOUT, since: int = 0) -> None:
        self.wait(lambda: needle in self.output[since:], repr(needle), timeout)

    def wait_event(self, name: str, timeout: float = TIMEOUT) -> dict[str, Any]:
        self.wait(lambda: any(e.get("event") == name for e in self.events), name, timeout)
        return next(e for e in self.events if e.get("event") == name)

    def type(self, text: bytes) -> None:
        self.sock.sendall(encode_data(text))

    def control(self, message: dict[str, Any]) -> None:
        self.sock.sendall(encode_control(message))

    def run(self, command: str, marker: str, timeout: float = TIMEOUT) -> bytes:
        """Type ``command`` (its output must end with ``marker``); the output since."""
        mark = len(self.output)
        self.type(command.encode() + b"\r")
        self.wait_output(marker.encode() + b"\r\n", timeout, since=mark)
        return bytes(self.output[mark:])

    def close(self) -> None:
        self.sock.close()
