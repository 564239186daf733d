"""The terminal client of ``coop``, ``coop attach`` and ``coop shell`` (SPEC 6, 7.2).

After ``attach``/``shell`` the daemon hands the connection to the session's supervisor,
which answers and then streams tagged frames. This module turns that stream into a
terminal: raw mode (always restored: try/finally plus atexit), window size changes sent as
``resize``, ``Ctrl+]`` to detach. With stdin not a terminal it behaves like
``docker exec``: output streamed, exit code taken from the ``pty_exited`` event.

Blocking sockets and ``select`` only: no asyncio on the CLI path.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import select
import signal
import socket
import struct
import sys
import termios
import tty
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from coop_run.errors import DaemonError, ProtocolError
from coop_run.ipc import protocol
from coop_run.ipc.client import Client
from coop_run.ipc.framing import (
    Control,
    Data,
    StreamDecoder,
    encode_control,
    encode_data,
    encode_message,
    parse_json_object,
)
from coop_run.ipc.schema import decode, encode
from coop_run.ipc.sockets import recv_exact

DETACH_KEY = b"\x1d"  # Ctrl+]
EXIT_NOTICE_PREFIX = b"\r\n\x1b[2m[process exited"
_HEADER = struct.Struct(">I")
_RECV = 65536


@dataclass(frozen=True)
class Outcome:
    """How a terminal session ended: ``detached``, ``exited`` (with code) or ``closed``."""

    reason: str
    code: int = 0


def terminal_size(fd: int) -> tuple[int, int] | None:
    try:
        size = os.get_terminal_size(fd)
    except OSError:
        return None
    if not size.columns or not size.lines:
        return None  # a pty nobody sized yet
    return size.columns, size.lines


def exit_code(event: protocol.PtyExited) -> int:
    """A shell-style exit status from a ``pty_exited`` event (128+N when killed)."""
    if event.code is not None:
        return event.code
    return 128 + event.signal if event.signal is not None else 1


def split_detach(data: bytes, key: bytes = DETACH_KEY) -> tuple[bytes, bool]:
    """The bytes to forward and whether the detach key was typed (what follows it is dropped)."""
    index = data.find(key)
    if index < 0:
        return data, False
    return data[:index], True


def open_stream(client: Client, request: protocol.Attach | protocol.Shell,
                ) -> tuple[socket.socket, protocol.AttachReply]:
    """Send ``attach``/``shell`` and read the answer byte-exactly (stream frames follow it).

    ``Client.receive`` reads ahead, which would swallow the first stream frames, so the
    answer is read here frame by frame on the client's socket.
    """
    sock: socket.socket = client._sock  # the connection becomes a stream
    sock.sendall(encode_message(encode(request)))
    try:
        (size,) = _HEADER.unpack(recv_exact(sock, _HEADER.size))
        reply = parse_json_object(recv_exact(sock, size))
    except ConnectionError:
        raise DaemonError("the daemon closed the connection") from None
    if isinstance(reply, ProtocolError):
        raise ProtocolError(f"bad answer from the daemon: {reply.message}", code=reply.code)
    answer = protocol.decode_reply(protocol.AttachReply, reply)
    sock.settimeout(None)
    return sock, answer


@contextlib.contextmanager
def raw_terminal(fd: int) -> Iterator[None]:
    """Raw mode on ``fd`` for the block; the old settings come back however it ends."""
    saved = termios.tcgetattr(fd)

    def restore() -> None:
        with contextlib.suppress(termios.error, OSError):
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)

    atexit.register(restore)
    try:
        tty.setraw(fd, termios.TCSANOW)
        yield
    finally:
        restore()
        atexit.unregister(restore)


@contextlib.contextmanager
def _winch_pipe() -> Iterator[int]:
    """A descriptor that becomes readable on SIGWINCH (the handler itself does nothing)."""
    read_fd, write_fd = os.pipe()
    os.set_blocking(read_fd, False)
    os.set_blocking(write_fd, False)
    old_handler = signal.signal(signal.SIGWINCH, lambda *_: None)
    old_fd = signal.set_wakeup_fd(write_fd)
    try:
        yield read_fd
    finally:
        signal.set_wakeup_fd(old_fd)
        signal.signal(signal.SIGWINCH, old_handler)
        os.close(read_fd)
        os.close(write_fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except BlockingIOError:
            select.select([], [fd], [])
            continue
        view = view[written:]


def pump(sock: socket.socket, *, stdin_fd: int, stdout_fd: int, interactive: bool,
         exit_on_pty_exit: bool, size_of: Callable[[], tuple[int, int] | None]) -> Outcome:
    """Move bytes between the terminal and the stream until detach, exit or hang-up."""
    decoder = StreamDecoder()
    read_stdin = True
    with _winch_pipe() as winch_fd:
        while True:
            watched: list[Any] = [sock, winch_fd]
            if read_stdin:
                watched.append(stdin_fd)
            try:
                ready = select.select(watched, [], [])[0]
            except InterruptedError:
                continue
            if winch_fd in ready:
                with contextlib.suppress(BlockingIOError):
                    os.read(winch_fd, 4096)
                size = size_of()
                if size is not None:
                    sock.sendall(encode_control(encode(protocol.Resize(*size))))
            if stdin_fd in ready:
                data = os.read(stdin_fd, _RECV)
                if not data:
                    read_stdin = False  # stdin ended: keep showing output
                else:
                    forward, detach = split_detach(data) if interactive else (data, False)
                    if forward:
                        sock.sendall(encode_data(forward))
                    if detach:
                        with contextlib.suppress(OSError):
                            sock.sendall(encode_control(encode(protocol.Detach())))
                        return Outcome("detached")
            if sock in ready:
                chunk = sock.recv(_RECV)
                if not chunk:
                    return Outcome("closed")
                for item in decoder.feed(chunk):
                    if isinstance(item, Data):
                        if not interactive and item.data.startswith(EXIT_NOTICE_PREFIX):
                            continue  # like docker exec: the exit code says it
                        _write_all(stdout_fd, item.data)
                    elif isinstance(item, Control):
                        event = item.message.get("event")
                        if event == protocol.Detached.TAG:
                            return Outcome("detached")
                        if event == protocol.PtyExited.TAG and exit_on_pty_exit:
                            exited = decode(protocol.PtyExited, item.message)
                            return Outcome("exited", exit_code(exited))
                    else:
                        raise ProtocolError(f"bad stream frame: {item.message}",
                                            code=item.code)


def run_terminal(sock: socket.socket, *, exit_on_pty_exit: bool) -> Outcome:
    """The stream on this process's terminal (raw when stdin is one)."""
    stdin_fd = sys.stdin.fileno()
    stdout_fd = sys.stdout.fileno()
    sys.stdout.flush()
    interactive = os.isatty(stdin_fd)

    def size_of() -> tuple[int, int] | None:
        return terminal_size(stdout_fd) or terminal_size(stdin_fd)

    if not interactive:
        return pump(sock, stdin_fd=stdin_fd, stdout_fd=stdout_fd, interactive=False,
                    exit_on_pty_exit=exit_on_pty_exit, size_of=size_of)
    with raw_terminal(stdin_fd):
        return pump(sock, stdin_fd=stdin_fd, stdout_fd=stdout_fd, interactive=True,
                    exit_on_pty_exit=exit_on_pty_exit, size_of=size_of)
