"""Resume from a byte offset (SPEC 6): a client that reconnects through the daemon gets
exactly the bytes it missed, as they were, and nothing it already had."""

from __future__ import annotations

import json
import os
import select
import socket
import time
from pathlib import Path
from typing import Any

from session_support import Coop

from coop_run.framing import Control, Data, StreamDecoder, encode_data, encode_message

TIMEOUT = 20.0


class Client:
    """A raw stream-mode client of the daemon socket (what the web UI or tunnel does)."""

    def __init__(self, path: Path, **attach: Any) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(os.fsencode(path))
        self.sock.settimeout(TIMEOUT)
        self.sock.sendall(encode_message({"version": 1})
                          + encode_message({"cmd": "attach", "session": "proj", **attach}))
        # Two message frames (the handshake and attach replies), then stream frames.
        buffer = b""
        replies: list[Any] = []
        while len(replies) < 2:
            size = int.from_bytes(buffer[:4], "big") if len(buffer) >= 4 else None
            if size is not None and len(buffer) >= 4 + size:
                replies.append(json.loads(buffer[4:4 + size]))
                buffer = buffer[4 + size:]
                continue
            data = self.sock.recv(65536)
            assert data, "hung up before attaching"
            buffer += data
        assert replies[1]["ok"] is True, replies
        self.start: int = replies[1]["offset"]
        self.output = bytearray()
        self._stream = StreamDecoder()
        self._feed(buffer)

    def _feed(self, data: bytes) -> None:
        for item in self._stream.feed(data):
            if isinstance(item, Data):
                self.output += item.data
            else:
                assert isinstance(item, Control), item

    def wait_for(self, needle: bytes) -> None:
        deadline = time.monotonic() + TIMEOUT
        while needle not in self.output:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no {needle!r} in {bytes(self.output[-300:])!r}"
            if select.select([self.sock], [], [], remaining)[0]:
                data = self.sock.recv(65536)
                assert data, "the stream ended"
                self._feed(data)

    def type(self, text: bytes) -> None:
        self.sock.sendall(encode_data(text))

    @property
    def end(self) -> int:
        return self.start + len(self.output)

    def close(self) -> None:
        self.sock.close()


def test_a_reconnecting_client_gets_exactly_what_it_missed(coop: Coop,
                                                         host_workspace: Path) -> None:
    assert coop("-d", cwd=host_workspace).returncode == 0
    sock = coop.coop_home / "sock"
    first = Client(sock, cols=80, rows=24)
    first.type(b"echo one-$((1+1))\r")
    first.wait_for(b"one-2")
    left_at = first.end
    first.close()  # the phone went to sleep

    other = Client(sock, cols=80, rows=24)
    other.type(b"echo two-$((2+1))\r")
    other.wait_for(b"two-3")
    seen = bytes(other.output[left_at - other.start:])
    other.close()
    assert b"two-3" in seen and b"one-2" not in seen

    back = Client(sock, cols=80, rows=24, offset=left_at)
    try:
        assert back.start == left_at
        back.wait_for(b"two-3")
        assert bytes(back.output[:len(seen)]) == seen  # the same bytes, none twice
    finally:
        back.close()
