"""A service on the host's 127.0.0.1 standing for a proxy: what a session reaches there
(the inherited-proxy tests of the network modes and of real sessions)."""

from __future__ import annotations

import contextlib
import select
import socket
import threading
from collections.abc import Iterator

TIMEOUT = 5.0


@contextlib.contextmanager
def echo_service(prefix: bytes = b"proxy:") -> Iterator[int]:
    """A TCP service on 127.0.0.1 (a free port, yielded) answering ``prefix`` and all it
    read once the client ended its side, on each connection (a thread each), for the
    block; then stopped, every thread joined, the socket closed."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    stop = threading.Event()
    workers: list[threading.Thread] = []

    def answer(conn: socket.socket) -> None:
        with conn:
            conn.settimeout(TIMEOUT)
            data = b""
            with contextlib.suppress(OSError):
                while chunk := conn.recv(65536):
                    data += chunk
                conn.sendall(prefix + data)

    def serve() -> None:
        while not stop.is_set():
            if select.select([srv], [], [], 0.1)[0]:
                conn, _ = srv.accept()
                worker = threading.Thread(target=answer, args=(conn,), daemon=True)
                workers.append(worker)
                worker.start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield int(srv.getsockname()[1])
    finally:
        stop.set()
        thread.join(TIMEOUT)
        for worker in workers:
            worker.join(TIMEOUT)
        srv.close()
    assert not thread.is_alive() and not any(w.is_alive() for w in workers), \
        "a service thread did not stop"
