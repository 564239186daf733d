"""The host's end of a sandbox init's control socket, shared by threads.

One ``SOCK_SEQPACKET`` socket carries everything the init says (``initproto``): replies,
each naming the request it answers by ``id``, interleaved with events (``ready``,
``exited``, ``failed``) that belong to nobody in particular. Any thread may send a request
and wait for its reply, and an event loop may read what is waiting whenever the socket is
readable; nobody owns the reading.

So reading is handed round: whoever needs a message and finds nobody reading becomes the
*reader*, reads one message, files it (a reply under its id, an event to the owner's
callback), and gives the role up; everybody else waits on the condition for their reply
to be filed. One reader at a time matters: two readers could each take a message, and
the one holding a reply might file it after the other has announced the end of file,
so its waiter would be told "stopped" for a request that was carried out.
"""

from __future__ import annotations

import errno
import itertools
import logging
import os
import select
import socket
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from coop_run.errors import InitProtocolError, SandboxError
from coop_run.sandbox import initproto

logger = logging.getLogger(__name__)

T = TypeVar("T")


class InitChannel:
    """Requests, replies and events on one init's control socket, for any number of threads.

    ``cond`` is the owner's condition: the channel guards its own state with it, waits and
    notifies on it, and calls ``on_event`` with it held, so the owner may keep the state
    those events change under the same lock (and must keep ``on_event`` short).
    """

    def __init__(self, name: str, cond: threading.Condition,
                 on_event: Callable[[initproto.Received], None]) -> None:
        self.name = name
        self.cond = cond
        self._on_event = on_event
        self._sock: socket.socket | None = None
        self._send_lock = threading.Lock()  # one sendmsg at a time; never on a closed fd
        self._reading = False
        self._eof = False
        self._replies: dict[int, initproto.Received] = {}
        self._abandoned: set[int] = set()  # ids whose waiter gave up: dropped on arrival
        self._ids = itertools.count(1)

    def open(self, sock: socket.socket) -> None:
        """Start using ``sock`` (the init exists)."""
        with self.cond:
            self._sock = sock

    @property
    def sock(self) -> socket.socket | None:
        """The socket while open (for an event loop to watch, or a test to write raw)."""
        return self._sock

    @property
    def closed(self) -> bool:
        """``close()`` has run, or the channel was never opened."""
        return self._sock is None

    @property
    def ended(self) -> bool:
        """Closed, or the init's end of file was read. Call with ``cond`` held."""
        return self._eof or self._sock is None

    # --- sending ------------------------------------------------------------------------

    def next_id(self) -> int:
        return next(self._ids)

    def send(self, message: dict[str, Any], fds: Sequence[int] = ()) -> None:
        """Send one message; ``OSError`` as ``sendmsg`` raises it (``EBADF`` once closed)."""
        with self._send_lock:
            sock = self._sock
            if sock is None:
                raise OSError(errno.EBADF, os.strerror(errno.EBADF))
            initproto.send(sock, message, tuple(fds))

    # --- reading ------------------------------------------------------------------------

    def wait_for(self, pick: Callable[[], T | None], deadline: float, what: str,
                 check: Callable[[], None]) -> T:
        """Read (taking turns as the reader) until ``pick()`` gives a value.

        ``pick`` and ``check`` run with ``cond`` held; ``check`` raises to give up (the
        owner's failure). Raises ``SandboxError`` once the channel has ended or at
        ``deadline`` (``time.monotonic()``).
        """
        while True:
            with self.cond:
                value = pick()
                if value is not None:
                    return value
                check()
                if self.ended:
                    raise SandboxError(f"sandbox {self.name} has stopped",
                                       code="SANDBOX_STOPPED")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise SandboxError(f"timed out waiting for {what}", code="SANDBOX_TIMEOUT")
                if self._reading:
                    self.cond.wait(remaining)
                    continue
                self._reading = True
                sock = self._sock
            assert sock is not None
            try:
                self._read_one(sock, remaining)
            finally:
                self._release()

    def reply(self, rid: int, deadline: float, what: str,
              check: Callable[[], None]) -> initproto.Received:
        """The reply to request ``rid`` (see ``wait_for``). A reply that comes after its
        waiter gave up goes to ``on_event`` and its descriptors are closed, so a late
        ``spawned`` still tells its owner of a process nobody serves."""
        try:
            return self.wait_for(lambda: self._replies.pop(rid, None), deadline, what, check)
        except SandboxError:
            with self.cond:
                late = self._replies.pop(rid, None)
                if late is None:
                    self._abandoned.add(rid)
                else:
                    self._drop(late)
            raise

    def pump(self) -> None:
        """File every message already waiting, without blocking; a no-op while another
        thread is the reader (it files them)."""
        self.drain(0)

    def drain(self, wait: float) -> None:
        """Become the reader within ``wait`` seconds, then file what is waiting."""
        sock = self._take(wait)
        if sock is not None:
            try:
                self._read_pending(sock)
            finally:
                self._release()

    def close(self, *, wait: float, drain: Callable[[], bool]) -> None:
        """Close the socket; first, if the reader's role comes within ``wait`` seconds and
        ``drain()`` says so, file what is waiting in it.

        A reader that kept the role finds the socket closed on its next read and ends.
        """
        sock = self._take(wait)
        try:
            if sock is not None and drain():
                self._read_pending(sock)
        finally:
            with self.cond, self._send_lock:
                if self._sock is not None:
                    self._sock.close()
                    self._sock = None
                if sock is not None:
                    self._reading = False
                self.cond.notify_all()

    def _take(self, wait: float) -> socket.socket | None:
        """Become the reader, waiting up to ``wait`` seconds for the current one."""
        with self.cond:
            if not self.cond.wait_for(lambda: not self._reading, wait) or self._sock is None:
                return None
            self._reading = True
            return self._sock

    def _release(self) -> None:
        with self.cond:
            self._reading = False
            self.cond.notify_all()

    def _read_pending(self, sock: socket.socket) -> None:
        while self._read_one(sock, 0):
            pass

    def _read_one(self, sock: socket.socket, timeout: float) -> bool:
        """Read and file the next message if one comes within ``timeout`` (the caller is
        the reader); False when none did or the channel ended."""
        try:
            if not select.select([sock], [], [], timeout)[0]:
                return False
            received = initproto.recv(sock)
        except (OSError, ValueError, InitProtocolError) as exc:  # ValueError: closed under us
            logger.warning("sandbox %s control channel: %s", self.name, exc)
            received = None
        with self.cond:
            self._file(received)
        return received is not None

    def _file(self, received: initproto.Received | None) -> None:
        """Called with ``cond`` held: a reply under its id, anything else to ``on_event``."""
        if received is None:
            self._eof = True
            return
        rid = received.message.get("id")
        if isinstance(rid, int) and rid not in self._abandoned:
            self._replies[rid] = received
            return
        if isinstance(rid, int):
            self._abandoned.discard(rid)
        self._drop(received)

    def _drop(self, received: initproto.Received) -> None:
        """An event, or a reply nobody waits for: to ``on_event``, descriptors closed."""
        try:
            self._on_event(received)
        finally:
            for fd in received.fds:
                os.close(fd)
