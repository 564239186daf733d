"""Test servers inside the test topology's namespaces (run as root by topology.py).

``netserver.py NAME`` serves, on every address of its namespace: TCP port 80 answering
``NAME\\n`` to each connection, and DNS (UDP and TCP port 53) answering A queries from
``RECORDS`` and NXDOMAIN otherwise. Stdlib only: it runs under /usr/bin/python3.
"""

from __future__ import annotations

import socket
import struct
import sys
import threading

RECORDS = {"internet.coop.test": "198.51.100.1", "lan.coop.test": "192.168.213.1"}


def answer(query: bytes) -> bytes:
    """A minimal DNS answer: the question echoed, one A record or NXDOMAIN."""
    if len(query) < 12:
        return b""
    ident = query[:2]
    pos, labels = 12, []
    while pos < len(query) and query[pos] != 0:
        size = query[pos]
        labels.append(query[pos + 1:pos + 1 + size].decode(errors="replace"))
        pos += 1 + size
    question = query[12:pos + 5]
    name = ".".join(labels).lower()
    addr = RECORDS.get(name)
    flags = 0x8180 if addr else 0x8183
    header = ident + struct.pack("!HHHHH", flags, 1, 1 if addr else 0, 0, 0)
    if not addr:
        return header + question
    record = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + socket.inet_aton(addr)
    return header + question + record


def serve_tcp_banner(name: str) -> None:
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("0.0.0.0", 80))
    srv.listen(64)
    while True:
        conn, _ = srv.accept()
        with conn:
            conn.sendall(f"{name}\n".encode())


def serve_dns_udp() -> None:
    srv = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    srv.bind(("0.0.0.0", 53))
    while True:
        query, peer = srv.recvfrom(4096)
        reply = answer(query)
        if reply:
            srv.sendto(reply, peer)


def serve_dns_tcp() -> None:
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("0.0.0.0", 53))
    srv.listen(16)
    while True:
        conn, _ = srv.accept()
        with conn:
            conn.settimeout(2)
            try:
                (size,) = struct.unpack("!H", conn.recv(2))
                reply = answer(conn.recv(size))
                conn.sendall(struct.pack("!H", len(reply)) + reply)
            except (OSError, struct.error):
                pass


def main() -> None:
    name = sys.argv[1]
    for target in (serve_dns_udp, serve_dns_tcp):
        threading.Thread(target=target, daemon=True).start()
    serve_tcp_banner(name)


if __name__ == "__main__":
    main()
