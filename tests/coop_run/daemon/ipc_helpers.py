"""A raw socket client for daemon tests: send exact bytes, read frames with a deadline."""

from __future__ import annotations

import os
import socket
import struct
import time
from pathlib import Path
from typing import Any

from coop_run.ipc.framing import FrameDecoder, encode_message

READ_TIMEOUT = 10.0


class RawClient:
    """A blocking connection that can misbehave on purpose."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(READ_TIMEOUT)
        self.sock.connect(os.fsencode(path))
        self.decoder = FrameDecoder()
        self.pending: list[Any] = []

    def send(self, message: dict[str, Any]) -> None:
        self.sock.sendall(encode_message(message))

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def receive(self) -> Any:
        """The next decoded item (a dict, or a decode error instance)."""
        deadline = time.monotonic() + READ_TIMEOUT
        while not self.pending:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            data = self.sock.recv(65536)
            if not data:
                raise EOFError("the daemon closed the connection")
            self.pending.extend(self.decoder.feed(data))
        return self.pending.pop(0)

    def hello(self) -> dict[str, Any]:
        self.send({"version": 1})
        reply = self.receive()
        assert reply == {"version": 1, "ok": True}, reply
        return reply

    def request(self, message: dict[str, Any]) -> Any:
        self.send(message)
        return self.receive()

    def closed_by_peer(self) -> bool:
        """True once the daemon hung up (reads end of file), within the timeout."""
        self.sock.settimeout(READ_TIMEOUT)
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    return True
                self.pending.extend(self.decoder.feed(data))
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def header(size: int) -> bytes:
    return struct.pack(">I", size)
