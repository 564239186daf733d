"""Root ``veth``: the host's 127.0.0.1:PORT at the session's own 127.0.0.1:PORT, for an
inherited proxy on the host's loopback (what pasta's ``--tcp-ns PORT`` does rootless).

The listening sockets are made inside the session's network namespace (a short-lived
thread joins it, binds, listens and ends), before anything runs there, so nothing inside
can take the port first. Each accepted connection is relayed to 127.0.0.1:PORT of the
host by threads of the process that owns the mode (the session supervisor): the proxy
sees a client on its own loopback, as the user's programs are, and the session's filter
and routes stay as they are (no DNAT to loopback, no ``route_localnet``). Only the
ports asked for, only to 127.0.0.1; every thread is joined by ``close()``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import socket
import threading
from collections.abc import Sequence

from coop_build import linux
from coop_run.errors import NetworkError

logger = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
MAX_CONNECTIONS = 64  # at once, over all ports; more are closed on accept
CONNECT_TIMEOUT = 10.0
CHUNK = 64 * 1024


def listen_in_netns(ns_pid: int, port: int) -> socket.socket:
    """A TCP socket listening on 127.0.0.1:``port`` of the network namespace of
    ``ns_pid`` (its loopback must be up). Needs CAP_SYS_ADMIN over that namespace."""
    made: list[socket.socket] = []
    failed: list[BaseException] = []

    def work() -> None:  # network namespaces are per thread: this one ends inside
        try:
            fd = os.open(f"/proc/{ns_pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
            try:
                linux.setns(fd, linux.CLONE_NEWNET)
            finally:
                os.close(fd)
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((LOOPBACK, port))
                sock.listen(16)
            except BaseException:
                sock.close()
                raise
            made.append(sock)
        except BaseException as exc:
            failed.append(exc)

    thread = threading.Thread(target=work, name=f"relay-listen-{port}")
    thread.start()
    thread.join()
    if failed or not made:
        reason = failed[0] if failed else "no socket"
        raise NetworkError(f"cannot listen on the session's {LOOPBACK}:{port} for the "
                           f"host's proxy: {reason}")
    return made[0]


class LoopbackRelay:
    """Relays connections to the session's 127.0.0.1:PORT to the host's, for ``ports``."""

    def __init__(self, ports: Sequence[int]) -> None:
        self.ports = tuple(ports)
        self._listeners: list[socket.socket] = []
        self._wake_r, self._wake_w = -1, -1
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._workers: set[threading.Thread] = set()
        self._closing = False

    def start(self, ns_pid: int) -> None:
        """Listen inside the namespace of ``ns_pid`` and serve; ``close()`` undoes it,
        also after a failure here."""
        try:
            for port in self.ports:
                self._listeners.append(listen_in_netns(ns_pid, port))
        except BaseException:
            self.close()
            raise
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._thread = threading.Thread(target=self._serve, name="relay", daemon=True)
        self._thread.start()
        logger.debug("relaying the host's %s ports %s into the session", LOOPBACK,
                     ", ".join(map(str, self.ports)))

    def close(self) -> None:
        """Stop listening, cut every relayed connection, join every thread; idempotent."""
        with self._lock:
            self._closing = True
            conns = list(self._conns)
        if self._wake_w >= 0:
            with contextlib.suppress(OSError):
                os.write(self._wake_w, b"x")
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        with self._lock:
            workers = list(self._workers)
        for worker in workers:
            worker.join()
        for sock in self._listeners:
            sock.close()
        self._listeners.clear()
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                os.close(fd)
        self._wake_r = self._wake_w = -1

    def _serve(self) -> None:
        with selectors.DefaultSelector() as sel:
            sel.register(self._wake_r, selectors.EVENT_READ, None)
            for sock in self._listeners:
                sel.register(sock, selectors.EVENT_READ, sock.getsockname()[1])
            while True:
                for key, _ in sel.select():
                    if key.data is None:
                        return
                    listener = key.fileobj
                    assert isinstance(listener, socket.socket)
                    try:
                        conn, _addr = listener.accept()
                    except OSError:
                        continue
                    self._begin(conn, int(key.data))

    def _begin(self, conn: socket.socket, port: int) -> None:
        with self._lock:
            if self._closing or len(self._workers) >= MAX_CONNECTIONS:
                conn.close()
                return
            worker = threading.Thread(target=self._relay, args=(conn, port), daemon=True,
                                      name=f"relay-{port}")
            self._workers.add(worker)
            self._conns.add(conn)
        worker.start()

    def _relay(self, conn: socket.socket, port: int) -> None:
        upstream: socket.socket | None = None
        back: threading.Thread | None = None
        try:
            try:
                upstream = socket.create_connection((LOOPBACK, port), CONNECT_TIMEOUT)
            except OSError as exc:
                logger.debug("the host's %s:%d refused a relayed connection: %s",
                             LOOPBACK, port, exc.strerror)
                return
            upstream.settimeout(None)
            with self._lock:
                if self._closing:
                    return
                self._conns.add(upstream)
            back = threading.Thread(target=_pump, args=(upstream, conn), daemon=True,
                                    name=f"relay-{port}-back")
            back.start()
            _pump(conn, upstream)
        finally:
            if back is not None:
                back.join()
            with self._lock:
                self._conns.discard(conn)
                if upstream is not None:
                    self._conns.discard(upstream)
                self._workers.discard(threading.current_thread())
            conn.close()
            if upstream is not None:
                upstream.close()


def _pump(src: socket.socket, dst: socket.socket) -> None:
    """Copy ``src`` to ``dst`` until ``src`` ends, then end ``dst``'s sending side."""
    try:
        while True:
            data = src.recv(CHUNK)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        with contextlib.suppress(OSError):
            src.shutdown(socket.SHUT_RDWR)
    finally:
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)
