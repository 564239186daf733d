"""The supervisor <-> sandbox init channel: records, messages, and passing descriptors.

The channel is a ``SOCK_SEQPACKET`` socketpair made before the sandbox forks, so each
``sendmsg`` is one record and descriptors passed with ``SCM_RIGHTS`` arrive with the
message they belong to. Its far end is ``coop-init`` (C, ``csrc/coop-init.c``), which the
cloned child execs once its ids are mapped, so the wire format is one C parses in a few
lines:

    4-byte big-endian length of the rest, then "op\\0" and "key=value\\0" items

A list is its key repeated (``argv=sh\\0argv=-c\\0``), a map is ``key=name=value`` items,
and an absent key is None (an empty list or map). Each op has a fixed ``SCHEMAS`` entry,
which is how ``decode`` gives back the types ``encode`` was given; ``coop-init`` reads
the same entries from ``csrc/initproto.h``, which ``c_header`` writes.

Set-up, supervisor -> init (no ids; a failure ends the init with "failed")::

    {"op": "mapped"}                          to the cloned child: ids mapped, become uid
                                              0 of the namespace, exec coop-init
    {"op": "setup", "hostname", "child_caps"} hostname, what children may hold
    the mount plan, one record per operation (``sandbox.mounts.plan_records``):
    lower (one per layer, bottom first), overlay, fresh, bind, symlink, hostlayer (its
    lowers before it), hostentry, and last "pivot"

The overlay's directories reach the init as descriptors, never as names it would walk
to (root's sandbox is an unprivileged id range that may not enter root's 0700
directories): a "lower" carries its layer directory, an "overlay" the mount point,
upper and work. A "hostlayer" (``image = "host"``: one of the host's directories as the
lowest layer of an overlay at ``target`` inside the root) carries its upper and work;
its lowers, the host's directory first, come as "lower" records before it. A "bind"
carries its source the same way when the init may not walk to it (root's sandbox; a
plain user's init is that user and takes the path), or with ``idmapped`` a detached
idmapped mount to attach. Descriptors are ``O_PATH``, opened by
the supervisor below ``/proc/<init>/root`` so that they lie in the init's mount
namespace. The paths travel too, for messages.

Supervisor -> init requests (each carries an ``id`` echoed by the reply)::

    {"op": "spawn", "id", "argv", "env", "cwd", "pty", "cols", "rows", "stdio"}
        stdio: how many descriptors (0 or 3: stdin, stdout, stderr) ride with a non-PTY spawn
    {"op": "signal", "id", "pid", "signo"}
    {"op": "shutdown", "id", "grace"}

Init -> supervisor::

    {"op": "ready", "pid": <init's pid as seen inside>}      once, after pivot_root
    {"op": "spawned", "id", "pid", "pts"} (+ the PTY master descriptor when pty was asked)
    {"op": "ok", "id"}  /  {"op": "error", "id", "message"}
    {"op": "exited", "pid", "code", "signal"}                 for every process it spawned
    {"op": "failed", "message"}                               setup failed; the init exits

The supervisor learns host pids from ``SCM_CREDENTIALS``: the init stamps a ``spawned``
reply with the child's pid, and the kernel translates it into the receiver's namespace.

Everything above the "I/O" marker is pure.
"""

from __future__ import annotations

import array
import math
import os
import socket
import struct
import textwrap
from dataclasses import dataclass
from typing import Any

from coop_run.errors import InitProtocolError

MAX_FRAME = 128 * 1024  # socket buffers hold this; env and argv of a spawn stay far below
MAX_FDS = 3
_HEADER = struct.Struct(">I")
_UCRED = struct.Struct("iII")  # pid, uid, gid

# The type of every field of every op. "text" is a human message (decoded leniently:
# the C init may cut one inside a UTF-8 sequence).
SCHEMAS: dict[str, dict[str, str]] = {
    "spawn": {"id": "int", "argv": "strs", "env": "map", "cwd": "str", "pty": "bool",
              "cols": "int", "rows": "int", "stdio": "int"},
    "signal": {"id": "int", "pid": "int", "signo": "int"},
    "shutdown": {"id": "int", "grace": "float"},
    "mapped": {},
    "setup": {"hostname": "str", "child_caps": "ints"},
    "lower": {"path": "str"},
    "overlay": {"root": "str", "upper": "str", "work": "str"},
    "fresh": {"fstype": "str", "target": "str", "flags": "int", "data": "str", "cover": "bool"},
    "bind": {"source": "str", "target": "str", "file": "bool", "readonly": "bool",
             "recursive": "bool", "optional": "bool", "idmapped": "bool"},
    "symlink": {"target": "str", "points_to": "str"},
    "hostlayer": {"target": "str", "upper": "str", "work": "str"},
    "hostentry": {"name": "str"},
    "pivot": {},
    "ready": {"pid": "int"},
    "spawned": {"id": "int", "pid": "int", "pts": "str"},
    "ok": {"id": "int"},
    "error": {"id": "int", "message": "text"},
    "exited": {"pid": "int", "code": "int", "signal": "int"},
    "failed": {"message": "text"},
}
_LISTS = ("strs", "ints", "map")


def _bytes(text: str) -> bytes:
    data = text.encode("utf-8", "surrogateescape")
    if b"\0" in data:
        raise InitProtocolError(f"NUL byte in {text[:40]!r}")
    return data


def _items(key: str, kind: str, value: Any) -> list[bytes]:
    """The ``key=value`` items of one field (none for None)."""
    if value is None:
        return []
    prefix = key.encode() + b"="
    if kind == "bool" and isinstance(value, bool):
        return [prefix + (b"1" if value else b"0")]
    if kind == "int" and isinstance(value, int) and not isinstance(value, bool):
        return [prefix + str(value).encode()]
    if kind == "float" and isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise InitProtocolError(f"{key}: {value} is not a finite number")
        return [prefix + repr(float(value)).encode()]
    if kind in ("str", "text") and isinstance(value, str):
        return [prefix + _bytes(value)]
    if kind == "strs" and isinstance(value, list | tuple) and all(
            isinstance(v, str) for v in value):
        return [prefix + _bytes(v) for v in value]
    if kind == "ints" and isinstance(value, list | tuple) and all(
            isinstance(v, int) and not isinstance(v, bool) for v in value):
        return [prefix + str(v).encode() for v in value]
    if kind == "map" and isinstance(value, dict) and all(
            isinstance(k, str) and k and "=" not in k and isinstance(v, str)
            for k, v in value.items()):
        return [prefix + _bytes(f"{k}={v}") for k, v in value.items()]
    raise InitProtocolError(f"{key}: {type(value).__name__} is not a valid {kind}")


def encode(message: dict[str, Any]) -> bytes:
    """One record for ``message`` (its op must be in ``SCHEMAS``)."""
    op = message.get("op")
    if not isinstance(op, str) or op not in SCHEMAS:
        raise InitProtocolError(f"unknown op {op!r}")
    schema = SCHEMAS[op]
    items = [op.encode()]
    for key, value in message.items():
        if key == "op":
            continue
        if key not in schema:
            raise InitProtocolError(f"{op}: unknown field {key!r}")
        items += _items(key, schema[key], value)
    body = b"".join(item + b"\0" for item in items)
    if len(body) > MAX_FRAME:
        raise InitProtocolError(f"message of {len(body)} bytes exceeds {MAX_FRAME}")
    return _HEADER.pack(len(body)) + body


def _value(kind: str, raw: bytes) -> Any:
    if kind in ("int", "ints"):
        if not raw or not raw.lstrip(b"-").isdigit():
            raise ValueError(f"{raw[:40]!r} is not an integer")
        return int(raw)
    if kind == "bool":
        if raw not in (b"0", b"1"):
            raise ValueError(f"{raw[:40]!r} is not 0 or 1")
        return raw == b"1"
    if kind == "float":
        number = float(raw)
        if not math.isfinite(number):
            raise ValueError(f"{raw[:40]!r} is not a finite number")
        return number
    if kind == "text":
        return raw.decode("utf-8", "replace")
    text = raw.decode("utf-8", "surrogateescape")
    if kind == "map":
        name, eq, value = text.partition("=")
        if not name or not eq:
            raise ValueError(f"{text[:40]!r} is not name=value")
        return name, value
    return text


def decode(record: bytes) -> dict[str, Any]:
    """The message in one complete record (``InitProtocolError`` if malformed)."""
    if len(record) < _HEADER.size:
        raise InitProtocolError(f"record of {len(record)} bytes has no header")
    (length,) = _HEADER.unpack_from(record)
    body = record[_HEADER.size:]
    if length > MAX_FRAME:
        raise InitProtocolError(f"frame length {length} exceeds {MAX_FRAME}")
    if length != len(body):
        raise InitProtocolError(f"record of {len(record)} bytes is not exactly one message")
    if not body.endswith(b"\0"):
        raise InitProtocolError("the last item is not NUL-terminated")
    op_raw, *items = body[:-1].split(b"\0")
    op = op_raw.decode("utf-8", "replace")
    schema = SCHEMAS.get(op)
    if schema is None:
        raise InitProtocolError(f"unknown op {op!r}")
    message: dict[str, Any] = {"op": op}
    message.update((key, [] if kind in _LISTS else None) for key, kind in schema.items())
    for item in items:
        key_raw, eq, raw = item.partition(b"=")
        key = key_raw.decode("utf-8", "replace")
        kind = schema.get(key)
        if kind is None or not eq:
            raise InitProtocolError(f"{op}: unknown field {key!r}")
        try:
            value = _value(kind, raw)
        except ValueError as exc:
            raise InitProtocolError(f"{op}: field {key!r}: {exc}") from exc
        if kind in _LISTS:
            message[key].append(value)
        elif message[key] is not None:
            raise InitProtocolError(f"{op}: field {key!r} given twice")
        else:
            message[key] = value
    for key, kind in schema.items():
        if kind == "map":
            message[key] = dict(message[key])
    return message


# --- spawn requests, checked -------------------------------------------------------------


def _int(message: dict[str, Any], key: str, low: int, high: int) -> None:
    value = message.get(key)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InitProtocolError(f"{message.get('op')}: {key!r} must be an integer in {low}..{high}")


def check_spawn(message: dict[str, Any]) -> None:
    """``InitProtocolError`` unless ``message`` is a spawn ``coop-init`` will take (absent and
    None fields take its defaults). The supervisor checks before sending, so a bad spawn
    fails with its reason here; ``coop-init`` checks again."""
    _int(message, "id", 0, 2**53)
    argv = message.get("argv")
    if (not isinstance(argv, list) or not argv
            or not all(isinstance(a, str) and "\0" not in a for a in argv)):
        raise InitProtocolError("spawn: 'argv' must be a non-empty list of strings")
    env = message.get("env") or {}
    if not isinstance(env, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and k and "=" not in k
        and "\0" not in k + v for k, v in env.items()
    ):
        raise InitProtocolError("spawn: 'env' must map names (no '=') to strings")
    cwd = message.get("cwd")
    if cwd is not None and (not isinstance(cwd, str) or not cwd.startswith("/")):
        raise InitProtocolError("spawn: 'cwd' must be an absolute path or null")
    pty = message.get("pty") or False
    if not isinstance(pty, bool):
        raise InitProtocolError("spawn: 'pty' must be a boolean")
    _int(message, "stdio", 0, MAX_FDS)
    if message.get("stdio") not in (None, 0, MAX_FDS) or (pty and message.get("stdio")):
        raise InitProtocolError("spawn: 'stdio' is 0 or 3, and 0 with a PTY")
    _int(message, "cols", 1, 65535)
    _int(message, "rows", 1, 65535)


# --- coop-init's copy of the schema ------------------------------------------------------

C_HEADER = "initproto.h"  # in csrc/, next to coop-init.c


def c_header() -> str:
    """``SCHEMAS``, ``MAX_FRAME`` and ``MAX_FDS`` as C, for ``coop-init.c`` (which spells no
    op or field name of its own). The file is checked in (a build needs no Python) and
    a test fails while it differs from this: ``scripts/gen-initproto-header`` rewrites it.

    ``OP_<OP>`` indexes ``schema``; ``F_<OP>_<FIELD>`` indexes that op's fields.
    """
    for name in (*SCHEMAS, *(key for schema in SCHEMAS.values() for key in schema)):
        if not (name.isascii() and name.isidentifier() and name.islower()):
            raise ValueError(f"{name!r} cannot be a C identifier")
    kinds = sorted({kind for schema in SCHEMAS.values() for kind in schema.values()})
    widest = max(len(schema) for schema in SCHEMAS.values())
    lines = [
        f"/* {C_HEADER}: coop_run.sandbox.initproto's wire schema for coop-init.c. Generated",
        " * from initproto.py by scripts/gen-initproto-header; do not edit (test_coop_init.py",
        " * fails while this file differs from what initproto.py generates). */",
        "#ifndef COOP_INITPROTO_H",
        "#define COOP_INITPROTO_H",
        "",
        f"#define MAX_FRAME {MAX_FRAME}",
        f"#define MAX_FDS {MAX_FDS}",
        f"#define MAX_OP_FIELDS {widest}",
        "",
        *textwrap.wrap("enum kind { " + ", ".join(f"KIND_{kind.upper()}" for kind in kinds)
                       + " };", 92, subsequent_indent="            "),
        "",
        "enum op {",
        *(f"    OP_{op.upper()}," for op in SCHEMAS),
        "    N_OPS",
        "};",
        "",
    ]
    for op, schema in SCHEMAS.items():
        if schema:
            names = " ".join(f"F_{op.upper()}_{key.upper()}," for key in schema)
            lines += textwrap.wrap(f"enum {{ {names[:-1]} }};", 92,
                                   subsequent_indent="       ", break_on_hyphens=False)
    lines += [
        "",
        "static const struct op_schema {",
        "    const char *name;",
        "    int count;",
        "    struct { const char *name; enum kind kind; } field[MAX_OP_FIELDS];",
        "} schema[N_OPS] = {",
    ]
    for op, schema in SCHEMAS.items():
        head = f"    [OP_{op.upper()}] = {{.name = \"{op}\", .count = {len(schema)}"
        if not schema:
            lines.append(head + "},")
            continue
        lines.append(head + ", .field = {")
        lines += [f"        {{\"{key}\", KIND_{kind.upper()}}}," for key, kind in schema.items()]
        lines.append("    }},")
    lines += ["};", "", "#endif", ""]
    return "\n".join(lines)


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
    try:
        data, ancdata, flags, _ = sock.recvmsg(MAX_FRAME + _HEADER.size, space)
    except ConnectionResetError:
        # The peer went with a record of ours unread: the kernel says so first, then
        # gives what the peer sent before it went ("failed": why), then end of file.
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
        raise InitProtocolError("message or its descriptors were truncated")
    try:
        message = decode(data)
    except InitProtocolError:
        for fd in fds:
            os.close(fd)
        raise
    return Received(message=message, fds=fds, cred_pid=cred_pid)
