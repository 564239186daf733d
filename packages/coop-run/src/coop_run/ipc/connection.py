"""The one asyncio framed connection: the daemon serves its clients with it, a supervisor
its clients and the daemon, and the daemon talks to supervisors with it.

A non-blocking unix stream socket read with ``recvmsg``, so descriptors passed with a
frame (``adopt`` hands a client's socket to a supervisor) arrive with it; frames are cut
by ``framing.FrameDecoder``. The socket stays reachable (``detach``) because a connection
may end by giving its socket away: to a supervisor, or to a PTY's stream mode.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections import deque
from collections.abc import Sequence
from pathlib import Path

from coop_run.errors import FrameTooLargeError, ProtocolError
from coop_run.ipc import protocol, sockets
from coop_run.ipc.framing import (
    MAX_FRAME_SIZE,
    DecodeError,
    FrameDecoder,
    Message,
    encode_message,
    parse_json_object,
)

RECV_SIZE = 65536
MAX_FDS = 4  # descriptors taken with one read; more are closed by the kernel's truncation


class FramedConnection:
    """Message-mode frames both ways on ``sock``; past the handshake once ``greet`` or
    ``connect`` returned."""

    def __init__(self, sock: socket.socket, *, peer_pid: int = 0) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.peer_pid = peer_pid
        self._decoder = FrameDecoder()
        self._pending: deque[Message | DecodeError] = deque()
        self._fds: list[int] = []
        self._eof = False
        self._detached = False

    @classmethod
    async def connect(cls, path: Path, *, what: str) -> FramedConnection:
        """Connect to a coop socket we own (checked before and after connecting) and
        shake hands; ``OSError``, ``ProtocolError`` or ``DaemonError`` on failure."""
        loop = asyncio.get_running_loop()
        sockets.check_connect_path(path, what=what)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, os.fsencode(path))
            sockets.check_peer(sock, path, what=what)
            conn = cls(sock)
            await conn._hello(what)
        except BaseException:
            sock.close()
            raise
        return conn

    async def _hello(self, what: str) -> None:
        await self.send(protocol.hello())
        reply = await self.receive()
        if reply is None:
            raise ConnectionError(f"the {what} closed the connection")
        protocol.check_handshake_reply(reply)

    async def greet(self, timeout: float) -> bool:
        """The server's side of the handshake: True once the peer's hello was accepted;
        False (after telling it why, when it said anything) otherwise."""
        try:
            async with asyncio.timeout(timeout):
                hello = await self.receive()
        except TimeoutError:
            return False
        if hello is None:
            return False
        try:
            protocol.check_hello(hello)
        except ProtocolError as exc:
            await self.send(protocol.error_from(exc))
            return False
        await self.send(protocol.handshake_ok())
        return True

    async def receive(self) -> Message | None:
        """The next message; None at end of stream. A broken frame raises its
        ``ProtocolError`` (``FrameTooLargeError`` leaves the stream out of step)."""
        loop = asyncio.get_running_loop()
        while not self._pending:
            if self._eof:
                return None
            try:
                data, fds, _flags, _addr = socket.recv_fds(self.sock, RECV_SIZE, MAX_FDS)
            except BlockingIOError:
                await _readable(loop, self.sock.fileno())
                continue
            self._fds.extend(fds)
            if not data:
                self._eof = True
                return None
            self._pending.extend(self._decoder.feed(data))
        item = self._pending.popleft()
        if isinstance(item, ProtocolError):
            raise item
        return item

    async def send(self, message: Message, fds: Sequence[int] = ()) -> None:
        data = encode_message(message)
        loop = asyncio.get_running_loop()
        if fds:
            # One sendmsg carries the descriptors with the first byte; the rest follows.
            while True:
                try:
                    sent = socket.send_fds(self.sock, [data], list(fds))
                    break
                except BlockingIOError:
                    await _writable(loop, self.sock.fileno())
            data = data[sent:]
        if data:
            await loop.sock_sendall(self.sock, data)

    def take_fds(self) -> list[int]:
        """The descriptors received so far; the caller owns them now."""
        fds, self._fds = self._fds, []
        return fds

    def detach(self) -> socket.socket:
        """Give the socket away: ``close`` no longer closes it."""
        self._detached = True
        return self.sock

    def close(self) -> None:
        for fd in self.take_fds():
            with contextlib.suppress(OSError):
                os.close(fd)
        if not self._detached:
            self.sock.close()


async def _readable(loop: asyncio.AbstractEventLoop, fd: int) -> None:
    await _wait_fd(loop, fd, write=False)


async def _writable(loop: asyncio.AbstractEventLoop, fd: int) -> None:
    await _wait_fd(loop, fd, write=True)


async def _wait_fd(loop: asyncio.AbstractEventLoop, fd: int, *, write: bool) -> None:
    future: asyncio.Future[None] = loop.create_future()

    def ready() -> None:
        if not future.done():
            future.set_result(None)

    (loop.add_writer if write else loop.add_reader)(fd, ready)
    try:
        await future
    finally:
        (loop.remove_writer if write else loop.remove_reader)(fd)


async def open_stream(path: Path, message: Message, *, what: str, timeout: float,
                      ) -> tuple[socket.socket, Message]:
    """Connect, send an ``attach``/``shell`` and read its answer byte-exactly (stream
    frames follow it at once): the socket, now in stream mode, and the answer. The caller
    owns the socket, and closes it when the answer is a refusal."""
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(timeout):
        conn = await FramedConnection.connect(path, what=what)
        sock = conn.detach()
        try:
            await conn.send(message)
            reply = await _recv_frame(loop, sock)
        except BaseException:
            sock.close()
            raise
    if isinstance(reply, ProtocolError):
        sock.close()
        raise reply
    return sock, reply


async def _recv_frame(loop: asyncio.AbstractEventLoop, sock: socket.socket,
                      ) -> Message | ProtocolError:
    size = int.from_bytes(await _recv_exact(loop, sock, 4), "big")
    if size > MAX_FRAME_SIZE:
        return FrameTooLargeError.over(size, MAX_FRAME_SIZE)
    return parse_json_object(await _recv_exact(loop, sock, size))


async def _recv_exact(loop: asyncio.AbstractEventLoop, sock: socket.socket,
                      size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = await loop.sock_recv(sock, size - len(data))
        if not chunk:
            raise ConnectionError("closed before its answer")
        data += chunk
    return bytes(data)


async def request(path: Path, message: Message, *, what: str, timeout: float,
                  fds: Sequence[int] = ()) -> Message:
    """One command on a fresh connection and its answer; ``OSError``, ``TimeoutError``
    or ``ProtocolError`` when the peer is gone or out of step."""
    async with asyncio.timeout(timeout):
        conn = await FramedConnection.connect(path, what=what)
        try:
            await conn.send(message, fds)
            reply = await conn.receive()
        finally:
            conn.close()
    if reply is None:
        raise ConnectionError(f"the {what} closed the connection")
    return reply
