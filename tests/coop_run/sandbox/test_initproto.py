"""The supervisor <-> init framing and request checks (pure), plus descriptor passing."""

from __future__ import annotations

import json
import os
import socket
import struct

import pytest

from coop_run import initproto
from coop_run.initproto import (
    FrameDecoder,
    ProtocolError,
    ShutdownRequest,
    SignalRequest,
    SpawnRequest,
    decode,
    encode,
    exited_event,
    parse_request,
)

SPAWN = {"op": "spawn", "id": 7, "argv": ["sh", "-c", "true"], "env": {"A": "b"},
         "cwd": "/workspace", "pty": True, "cols": 100, "rows": 30}


def test_encode_is_length_prefixed_json() -> None:
    frame = encode({"op": "ready", "pid": 1})
    (length,) = struct.unpack(">I", frame[:4])
    assert length == len(frame) - 4
    assert json.loads(frame[4:]) == {"op": "ready", "pid": 1}


def test_decoder_handles_input_cut_at_every_byte() -> None:
    messages = [SPAWN, {"op": "exited", "pid": 3, "code": 0, "signal": None},
                {"op": "ok", "id": 1, "text": "é\u2603"}]
    stream = b"".join(encode(m) for m in messages)
    for cut in range(len(stream) + 1):
        decoder = FrameDecoder()
        got = []
        for part in (stream[:cut], stream[cut:]):
            decoder.feed(part)
            while (message := decoder.next()) is not None:
                got.append(message)
        assert got == messages, cut
        assert decoder.pending == 0


def test_decoder_byte_by_byte() -> None:
    decoder = FrameDecoder()
    got = []
    for byte in encode(SPAWN):
        decoder.feed(bytes([byte]))
        if (message := decoder.next()) is not None:
            got.append(message)
    assert got == [SPAWN]


@pytest.mark.parametrize(
    ("frame", "error"),
    [
        (struct.pack(">I", initproto.MAX_FRAME + 1), "exceeds"),
        (struct.pack(">I", 3) + b"\xff\xfe{", "not UTF-8 JSON"),
        (struct.pack(">I", 2) + b"[]", "string 'op'"),
        (struct.pack(">I", 11) + b'{"op": 5.0}', "string 'op'"),
    ],
)
def test_decoder_refuses_bad_frames(frame: bytes, error: str) -> None:
    decoder = FrameDecoder()
    decoder.feed(frame)
    with pytest.raises(ProtocolError, match=error):
        decoder.next()


def test_decode_wants_exactly_one_message() -> None:
    assert decode(encode({"op": "ok", "id": 1})) == {"op": "ok", "id": 1}
    with pytest.raises(ProtocolError, match="not exactly one"):
        decode(encode({"op": "ok", "id": 1}) + b"\0")
    with pytest.raises(ProtocolError, match="not exactly one"):
        decode(encode({"op": "ok", "id": 1})[:-1])


def test_encode_refuses_oversized() -> None:
    with pytest.raises(ProtocolError, match="exceeds"):
        encode({"op": "x", "blob": "a" * initproto.MAX_FRAME})


def test_parse_spawn() -> None:
    request = parse_request(SPAWN)
    assert request == SpawnRequest(id=7, argv=("sh", "-c", "true"), env={"A": "b"},
                                   cwd="/workspace", pty=True, cols=100, rows=30, stdio=0)
    minimal = parse_request({"op": "spawn", "id": 1, "argv": ["true"]})
    assert isinstance(minimal, SpawnRequest)
    assert (minimal.cols, minimal.rows, minimal.pty, minimal.cwd) == (80, 24, False, None)


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"argv": []}, "argv"),
        ({"argv": ["a\0b"]}, "argv"),
        ({"argv": "true"}, "argv"),
        ({"env": {"A=B": "c"}}, "env"),
        ({"env": {"A": 1}}, "env"),
        ({"env": ["A"]}, "env"),
        ({"cwd": "relative"}, "cwd"),
        ({"pty": "yes"}, "pty"),
        ({"cols": 0}, "cols"),
        ({"rows": True}, "rows"),
        ({"stdio": 3}, "stdio"),
        ({"pty": False, "stdio": 2}, "stdio"),
        ({"id": -1}, "id"),
        ({"id": "1"}, "id"),
    ],
)
def test_parse_spawn_refuses(change: dict[str, object], error: str) -> None:
    with pytest.raises(ProtocolError, match=error):
        parse_request({**SPAWN, **change})


def test_parse_signal_and_shutdown() -> None:
    signal = {"op": "signal", "id": 2, "pid": 5, "signo": 15}
    assert parse_request(signal) == SignalRequest(2, 5, 15)
    assert parse_request({"op": "shutdown", "id": 3, "grace": 1}) == ShutdownRequest(3, 1.0)
    assert parse_request({"op": "shutdown", "id": 3}) == ShutdownRequest(3, 5.0)
    with pytest.raises(ProtocolError, match="pid"):
        parse_request({"op": "signal", "id": 2, "pid": 0, "signo": 15})
    with pytest.raises(ProtocolError, match="signo"):
        parse_request({"op": "signal", "id": 2, "pid": 4, "signo": 99})
    with pytest.raises(ProtocolError, match="grace"):
        parse_request({"op": "shutdown", "id": 3, "grace": -1})
    with pytest.raises(ProtocolError, match="unknown request op 'exec'"):
        parse_request({"op": "exec", "id": 3})


def test_exited_event_from_wait_status() -> None:
    assert exited_event(4, 3 << 8) == {"op": "exited", "pid": 4, "code": 3, "signal": None}
    assert exited_event(4, 9) == {"op": "exited", "pid": 4, "code": None, "signal": 9}


def test_descriptors_and_credentials_travel_with_their_message() -> None:
    left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    right.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    r, w = os.pipe()
    try:
        initproto.send(left, {"op": "spawned", "id": 1, "pid": 9}, (w,), cred_pid=os.getpid())
        initproto.send(left, {"op": "ok", "id": 2})
        first = initproto.recv(right)
        second = initproto.recv(right)
        assert first is not None and second is not None
        assert first.message["op"] == "spawned" and len(first.fds) == 1
        assert first.cred_pid == os.getpid()
        assert second.fds == []
        os.write(first.fds[0], b"through")
        os.close(first.fds[0])
        assert os.read(r, 10) == b"through"
        left.close()
        assert initproto.recv(right) is None
    finally:
        right.close()
        os.close(r)
        os.close(w)
