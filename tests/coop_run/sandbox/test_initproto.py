"""The supervisor <-> init wire format and request checks (pure), plus descriptor passing."""

from __future__ import annotations

import os
import socket
import struct

import pytest

from coop_run.errors import InitProtocolError as ProtocolError
from coop_run.sandbox import initproto
from coop_run.sandbox.initproto import SCHEMAS, check_spawn, decode, encode

SPAWN = {"op": "spawn", "id": 7, "argv": ["sh", "-c", "true"], "env": {"A": "b", "E": "x=y"},
         "cwd": "/workspace", "pty": True, "cols": 100, "rows": 30}


def test_encode_is_length_prefixed_nul_separated_items() -> None:
    frame = encode({"op": "spawn", "id": 3, "argv": ["sh", "-c"], "env": {"A": "b=c"},
                    "pty": False})
    (length,) = struct.unpack(">I", frame[:4])
    assert length == len(frame) - 4
    assert frame[4:] == b"spawn\0id=3\0argv=sh\0argv=-c\0env=A=b=c\0pty=0\0"


def _full(message: dict[str, object]) -> dict[str, object]:
    """``message`` as decode gives it back: every field of its op, absent ones empty."""
    schema = SCHEMAS[str(message["op"])]
    empty = {"strs": [], "ints": [], "map": {}}
    return {"op": message["op"], **{k: empty.get(kind) for k, kind in schema.items()},
            **message}


@pytest.mark.parametrize("message", [
    SPAWN,
    {"op": "spawn", "id": 0, "argv": ["caf\u00e9", "\udcff raw byte", ""], "stdio": 3},
    {"op": "signal", "id": 2**53, "pid": 5, "signo": 15},
    {"op": "shutdown", "id": 1, "grace": 2.5},
    {"op": "mapped"},
    {"op": "setup", "hostname": "h", "child_caps": [0, 5, 13]},
    {"op": "lower", "path": "/l"},
    {"op": "overlay", "root": "/r", "upper": "/u", "work": "/w"},
    {"op": "fresh", "fstype": "tmpfs", "target": "/tmp", "flags": 6, "data": "mode=1777",
     "cover": False},
    {"op": "bind", "source": "/s", "target": "/t", "file": True, "readonly": True,
     "recursive": False, "optional": False, "idmapped": True},
    {"op": "symlink", "target": "/dev/fd", "points_to": "/proc/self/fd"},
    {"op": "hostentry", "name": "usr"},
    {"op": "pivot"},
    {"op": "ready", "pid": 1},
    {"op": "spawned", "id": 4, "pid": 12, "pts": "/dev/pts/0"},
    {"op": "ok", "id": 9},
    {"op": "error", "id": 9, "message": "cannot run x: No such file or directory"},
    {"op": "exited", "pid": 3, "code": 0},
    {"op": "exited", "pid": 3, "signal": 9},
    {"op": "failed", "message": "sandbox setup failed: \u2603"},
])
def test_every_message_round_trips(message: dict[str, object]) -> None:
    assert decode(encode(message)) == _full(message)


def test_a_record_cut_anywhere_is_refused() -> None:
    whole = encode(SPAWN)
    for cut in range(len(whole)):
        with pytest.raises(ProtocolError):
            decode(whole[:cut])
    with pytest.raises(ProtocolError, match="not exactly one"):
        decode(whole + b"x")


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"launch\0", "unknown op 'launch'"),
        (b"ok\0id=1", "not NUL-terminated"),
        (b"ok\0id=1\0id=2\0", "given twice"),
        (b"ok\0pid=1\0", "unknown field 'pid'"),
        (b"ok\0id\0", "unknown field 'id'"),
        (b"ok\0id=one\0", "not an integer"),
        (b"ok\0id=--1\0", "id"),
        (b"spawn\0id=1\0pty=yes\0", "not 0 or 1"),
        (b"spawn\0id=1\0env=novalue\0", "not name=value"),
        (b"spawn\0id=1\0env==x\0", "not name=value"),
        (b"shutdown\0id=1\0grace=nan\0", "finite"),
        (b"bind\0file=2\0", "not 0 or 1"),
    ],
)
def test_decode_refuses_malformed_records(body: bytes, error: str) -> None:
    with pytest.raises(ProtocolError, match=error):
        decode(struct.pack(">I", len(body)) + body)


def test_decode_refuses_an_oversized_length() -> None:
    with pytest.raises(ProtocolError, match="exceeds"):
        decode(struct.pack(">I", initproto.MAX_FRAME + 1))


@pytest.mark.parametrize(
    ("message", "error"),
    [
        ({"op": "launch"}, "unknown op"),
        ({"op": "ok", "id": 1, "pid": 2}, "unknown field"),
        ({"op": "ok", "id": True}, "not a valid int"),
        ({"op": "spawn", "id": 1, "argv": ["a\0b"]}, "NUL"),
        ({"op": "spawn", "id": 1, "argv": "true"}, "not a valid strs"),
        ({"op": "spawn", "id": 1, "env": {"A=B": "c"}}, "not a valid map"),
        ({"op": "shutdown", "id": 1, "grace": float("inf")}, "finite"),
        ({"op": "error", "id": 1, "message": "a" * initproto.MAX_FRAME}, "exceeds"),
    ],
)
def test_encode_refuses_what_cannot_be_sent(message: dict[str, object], error: str) -> None:
    with pytest.raises(ProtocolError, match=error):
        encode(message)


def test_a_spawn_with_defaults_or_every_field_passes_the_check() -> None:
    check_spawn(SPAWN)
    check_spawn({"op": "spawn", "argv": ["true"]})  # the rest takes coop-init's defaults
    check_spawn(decode(encode({"op": "spawn", "id": 1, "argv": ["true"]})))


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
def test_a_bad_spawn_is_refused_before_it_is_sent(change: dict[str, object],
                                                 error: str) -> None:
    with pytest.raises(ProtocolError, match=error):
        check_spawn({**SPAWN, **change})


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


def test_a_peer_gone_with_our_record_unread_still_gives_its_last_words() -> None:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        initproto.send(ours, {"op": "spawn", "id": 1, "argv": ["true"]})  # never read
        initproto.send(theirs, {"op": "failed", "message": "why"})
        theirs.close()  # the kernel reports ECONNRESET before the queued record
        last = initproto.recv(ours)
        assert last is not None and last.message == {"op": "failed", "message": "why"}
        assert initproto.recv(ours) is None
    finally:
        ours.close()


def test_the_c_header_names_every_op_and_field_as_an_identifier() -> None:
    header = initproto.c_header()
    for op, fields in SCHEMAS.items():
        assert f"OP_{op.upper()}," in header
        assert f'[OP_{op.upper()}] = {{.name = "{op}", .count = {len(fields)}' in header
        for key, kind in fields.items():
            assert f"F_{op.upper()}_{key.upper()}" in header
            assert f'{{"{key}", KIND_{kind.upper()}}},' in header


@pytest.mark.parametrize("schemas", [{"bad-op": {}}, {"ok": {"Id": "int"}}, {"ok": {"é": "int"}}])
def test_a_name_c_cannot_spell_is_refused(schemas: dict[str, dict[str, str]],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(initproto, "SCHEMAS", schemas)
    with pytest.raises(ValueError, match="cannot be a C identifier"):
        initproto.c_header()
