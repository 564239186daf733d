"""A stream client on a real PTY and a real socket pair, driven by a real event loop."""

from __future__ import annotations

import asyncio
import fcntl
import os
import socket
import struct
import termios
import tty
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from coop_run.ipc import protocol
from coop_run.ipc.framing import encode_data
from coop_run.ipc.schema import encode
from coop_run.session.ptys import Pty, StreamClient

TIMEOUT = 10.0


@dataclass
class Rig:
    loop: asyncio.AbstractEventLoop
    pty: Pty
    client: StreamClient
    served: socket.socket   # the supervisor's end
    peer: socket.socket     # the client program's end
    slave: int              # what the program behind the PTY reads
    closed: list[StreamClient]

    def run_until(self, predicate: Callable[[], bool], what: str) -> None:
        async def poll() -> None:
            while not predicate():
                await asyncio.sleep(0.005)

        try:
            self.loop.run_until_complete(asyncio.wait_for(poll(), TIMEOUT))
        except TimeoutError:
            raise AssertionError(f"timed out waiting for {what}") from None

    def unread(self) -> int:
        """Bytes the peer sent that the supervisor's end has not read yet."""
        raw = fcntl.ioctl(self.served.fileno(), termios.FIONREAD, struct.pack("i", 0))
        return int(struct.unpack("i", raw)[0])

    def typed(self) -> bytes:
        try:
            return os.read(self.slave, 4096)
        except BlockingIOError:
            return b""


@pytest.fixture
def rig() -> Iterator[Rig]:
    loop = asyncio.new_event_loop()
    master, slave = os.openpty()
    tty.setraw(slave)
    os.set_blocking(slave, False)
    served, peer = socket.socketpair()
    # A small send buffer, so that queued output outlasts one send.
    served.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    pty = Pty(loop, 0, "agent", ["agent"], cols=80, rows=24)
    pty.attach_master(master, pid=2, host_pid=None)
    closed: list[StreamClient] = []
    client = StreamClient(loop, served, "local", closed.append)
    client.start(pty, encode(pty.add_client(client, 80, 24, None, "s")))
    try:
        yield Rig(loop, pty, client, served, peer, slave, closed)
    finally:
        pty.close()
        client.close()
        peer.close()
        os.close(slave)
        loop.close()


def test_an_attached_client_types_into_the_pty(rig: Rig) -> None:
    rig.peer.sendall(encode_data(b"typed"))
    got = bytearray()

    def arrived() -> bool:
        got.extend(rig.typed())
        return bytes(got) == b"typed"

    rig.run_until(arrived, "the keys to reach the PTY")


def test_a_client_told_to_go_cannot_type_while_its_output_drains(rig: Rig) -> None:
    rig.pty.publish(b"x" * 256 * 1024)  # far more than the socket takes at once
    rig.client.send_and_close(encode(protocol.Detached()))
    assert not rig.closed, "the output should still be draining"
    rig.peer.sendall(encode_data(b"typed") + encode_data(b"more"))
    rig.run_until(lambda: rig.unread() == 0, "the supervisor to read the keys")
    assert rig.typed() == b""
    assert not rig.closed
    # Once the client reads its output and the detached event, it is hung up on.
    received = bytearray()

    def hung_up() -> bool:
        try:
            chunk = rig.peer.recv(65536, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return False
        received.extend(chunk)
        return not chunk

    rig.run_until(hung_up, "the hang-up")
    assert rig.closed == [rig.client]
    assert b'"detached"' in received[-64:]
    assert rig.typed() == b""
