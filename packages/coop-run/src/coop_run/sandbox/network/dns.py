"""A small DNS forwarder for ``veth`` sessions, and resolv.conf parsing.

Root veth: the session's nameserver is the host end of its veth, where the forwarder
listens on port 53. Rootless veth: the forwarder listens on an ephemeral port of the
host's 127.0.0.1 and pasta maps the sandbox's own 127.0.0.1:53 (UDP and TCP) to it.
Either way it relays queries to the host's real resolvers, wherever they are (127.0.0.53,
the LAN), and the session's firewall needs exactly one exception: DNS to the forwarder.
It runs as threads of the process that owns the mode (the session supervisor); every
thread is joined by ``close()``.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import selectors
import socket
import struct
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from coop_run.errors import NetworkError
from coop_run.ipc.sockets import recv_exact
from coop_run.sandbox.network.base import DNS_PORT

logger = logging.getLogger(__name__)

MAX_UDP = 4096
MAX_PENDING = 256
MAX_TCP_CLIENTS = 16
HEADER = 12

Upstream = tuple[str, int]


def parse_nameservers(text: str) -> list[str]:
    """The ``nameserver`` addresses of a resolv.conf, in order (invalid ones skipped)."""
    found: list[str] = []
    for line in text.splitlines():
        words = line.split("#", 1)[0].split(";", 1)[0].split()
        if len(words) >= 2 and words[0] == "nameserver":
            addr = words[1].split("%", 1)[0]  # drop an IPv6 zone
            try:
                found.append(str(ipaddress.ip_address(addr)))
            except ValueError:
                logger.warning("ignoring invalid nameserver %r in resolv.conf", words[1])
    return found


def upstreams_from(path: Path) -> list[Upstream]:
    """The host's resolvers as (address, 53) from ``path`` (normally /etc/resolv.conf)."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise NetworkError(f"cannot read {path}: {exc.strerror}") from exc
    servers = parse_nameservers(text)
    if not servers:
        raise NetworkError(f"{path} names no nameserver to forward the session's DNS to")
    return [(s, DNS_PORT) for s in servers]


def is_query(packet: bytes) -> bool:
    """A plausible DNS query: full header, QR bit clear, at least one question."""
    if len(packet) < HEADER or packet[2] & 0x80:
        return False
    qdcount: int = struct.unpack("!H", packet[4:6])[0]
    return qdcount >= 1


def _family(addr: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


@dataclass
class _Pending:
    client: tuple[str, int]
    query: bytes
    upstream_index: int
    deadline: float


class DnsForwarder:
    """Relays DNS from ``listen``:``port`` to ``upstreams`` (tried in order on timeout)."""

    def __init__(self, listen: str, upstreams: list[Upstream], *, port: int = DNS_PORT,
                 timeout: float = 2.0) -> None:
        if not upstreams:
            raise NetworkError("DNS forwarder needs at least one upstream resolver")
        self.listen = listen
        self.port = port
        self.upstreams = upstreams
        self.timeout = timeout
        self._udp: socket.socket | None = None
        self._tcp: socket.socket | None = None
        self._wake_r, self._wake_w = -1, -1
        self._thread: threading.Thread | None = None
        self._clients: set[threading.Thread] = set()
        self._client_socks: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._stopping = threading.Event()

    def start(self) -> None:
        """Binds both sockets (errors surface here, not in a thread) and starts serving."""
        fam = _family(self.listen)
        udp = socket.socket(fam, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        tcp = socket.socket(fam, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            tcp.bind((self.listen, self.port))
            # Port 0: the kernel picks one for TCP; UDP takes the same number.
            self.port = int(tcp.getsockname()[1])
            udp.bind((self.listen, self.port))
            tcp.listen(16)
        except OSError as exc:
            udp.close()
            tcp.close()
            raise NetworkError(
                f"DNS forwarder cannot listen on {self.listen}:{self.port}: {exc.strerror}"
            ) from exc
        self._udp, self._tcp = udp, tcp
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._thread = threading.Thread(target=self._serve, name=f"dns-{self.listen}",
                                        daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stops serving and joins every thread; idempotent."""
        if self._thread is None:
            return
        self._stopping.set()
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")
        self._thread.join()
        self._thread = None
        with self._lock:
            for sock in self._client_socks:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            clients = list(self._clients)
        for thread in clients:
            thread.join()
        for listener in (self._udp, self._tcp):
            if listener is not None:
                listener.close()
        self._udp = self._tcp = None
        os.close(self._wake_r)
        os.close(self._wake_w)

    # -- UDP and accept loop -------------------------------------------------------------

    def _serve(self) -> None:
        assert self._udp is not None and self._tcp is not None
        udp, tcp = self._udp, self._tcp
        sel = selectors.DefaultSelector()
        sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        sel.register(udp, selectors.EVENT_READ, "udp")
        sel.register(tcp, selectors.EVENT_READ, "tcp")
        pending: dict[socket.socket, _Pending] = {}
        try:
            while not self._stopping.is_set():
                now = time.monotonic()
                wait = min((p.deadline for p in pending.values()), default=now + 1.0) - now
                for key, _ in sel.select(timeout=max(0.0, wait)):
                    if key.data == "udp":
                        self._on_query(udp, sel, pending)
                    elif key.data == "tcp":
                        self._on_accept(tcp)
                    elif isinstance(key.data, _Pending):
                        self._on_answer(udp, sel, pending, key.fileobj)  # type: ignore[arg-type]
                self._expire(sel, pending)
        finally:
            for sock in pending:
                sock.close()
            sel.close()

    def _send_upstream(self, sel: selectors.BaseSelector, pending: dict[socket.socket, _Pending],
                       item: _Pending) -> None:
        host, port = self.upstreams[item.upstream_index]
        up = socket.socket(_family(host), socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        try:
            up.connect((host, port))
            up.send(item.query)
        except OSError as exc:
            logger.debug("DNS upstream %s:%d unusable: %s", host, port, exc)
            up.close()
            item.deadline = 0.0  # try the next upstream at once
            self._retry(sel, pending, item)
            return
        item.deadline = time.monotonic() + self.timeout
        pending[up] = item
        sel.register(up, selectors.EVENT_READ, item)

    def _retry(self, sel: selectors.BaseSelector, pending: dict[socket.socket, _Pending],
               item: _Pending) -> None:
        if item.upstream_index + 1 < len(self.upstreams):
            item.upstream_index += 1
            self._send_upstream(sel, pending, item)

    def _on_query(self, udp: socket.socket, sel: selectors.BaseSelector,
                  pending: dict[socket.socket, _Pending]) -> None:
        try:
            query, client = udp.recvfrom(MAX_UDP)
        except OSError:
            return
        if not is_query(query) or len(pending) >= MAX_PENDING:
            return
        self._send_upstream(sel, pending, _Pending(client, query, 0, 0.0))

    def _on_answer(self, udp: socket.socket, sel: selectors.BaseSelector,
                   pending: dict[socket.socket, _Pending], up: socket.socket) -> None:
        item = pending[up]
        try:
            answer = up.recv(MAX_UDP)
        except OSError:
            answer = b""
        mismatch = len(answer) < HEADER or answer[:2] != item.query[:2] or not answer[2] & 0x80
        if answer and mismatch:
            return  # not the answer to this query: keep waiting until the deadline
        sel.unregister(up)
        del pending[up]
        up.close()
        if answer:
            with contextlib.suppress(OSError):
                udp.sendto(answer, item.client)
        else:
            self._retry(sel, pending, item)

    def _expire(self, sel: selectors.BaseSelector,
                pending: dict[socket.socket, _Pending]) -> None:
        now = time.monotonic()
        for up, item in list(pending.items()):
            if item.deadline <= now:
                sel.unregister(up)
                del pending[up]
                up.close()
                self._retry(sel, pending, item)

    # -- TCP -----------------------------------------------------------------------------

    def _on_accept(self, tcp: socket.socket) -> None:
        try:
            conn, _ = tcp.accept()
        except OSError:
            return
        with self._lock:
            if len(self._clients) >= MAX_TCP_CLIENTS or self._stopping.is_set():
                conn.close()
                return
            thread = threading.Thread(target=self._tcp_client, args=(conn,), daemon=True,
                                      name="dns-tcp")
            self._clients.add(thread)
            self._client_socks.add(conn)
        thread.start()

    def _tcp_client(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(self.timeout)
            (size,) = struct.unpack("!H", recv_exact(conn, 2))
            query = recv_exact(conn, size)
            if not is_query(query):
                return
            for host, port in self.upstreams:
                try:
                    with socket.create_connection((host, port), timeout=self.timeout) as up:
                        up.sendall(struct.pack("!H", len(query)) + query)
                        (asize,) = struct.unpack("!H", recv_exact(up, 2))
                        answer = recv_exact(up, asize)
                except (OSError, ConnectionError):
                    continue
                if answer[:2] == query[:2]:
                    conn.sendall(struct.pack("!H", len(answer)) + answer)
                return
        except (OSError, ConnectionError, struct.error):
            return
        finally:
            conn.close()
            with self._lock:
                self._client_socks.discard(conn)
                self._clients.discard(threading.current_thread())
