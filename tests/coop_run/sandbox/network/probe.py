"""Run inside a sandbox-like namespace by the tests; prints one result line.

    probe.py tcp ADDR PORT          ok:<banner> | err:<errno name>
    probe.py echo ADDR PORT TEXT    sends TEXT, ends its side: ok:<all that came back> | err:...
    probe.py bulk ADDR PORT N       the same with N bytes: ok:<bytes back>:<their sha256> | err:...
    probe.py dns SERVER NAME [tcp]  ok:<address> | nx | err:<errno name>
    probe.py caps                   the effective capability mask (hex)
Stdlib only (runs under /usr/bin/python3).
"""

from __future__ import annotations

import errno
import hashlib
import random
import socket
import struct
import sys
import threading

TIMEOUT = 3.0


def _err(exc: OSError) -> str:
    if isinstance(exc, TimeoutError) or exc.errno is None:
        return "err:timeout"
    return f"err:{errno.errorcode.get(exc.errno, str(exc.errno))}"


def tcp(addr: str, port: int) -> str:
    try:
        with socket.create_connection((addr, port), timeout=TIMEOUT) as conn:
            return "ok:" + conn.recv(64).decode(errors="replace").strip()
    except OSError as exc:
        return _err(exc)


def _exchange(addr: str, port: int, data: bytes) -> bytes:
    with socket.create_connection((addr, port), timeout=TIMEOUT) as conn:
        sender = threading.Thread(target=lambda: (conn.sendall(data),
                                                  conn.shutdown(socket.SHUT_WR)))
        sender.start()
        reply = b""
        while chunk := conn.recv(65536):
            reply += chunk
        sender.join()
        return reply


def echo(addr: str, port: int, text: str) -> str:
    try:
        return "ok:" + _exchange(addr, port, text.encode()).decode(errors="replace").strip()
    except OSError as exc:
        return _err(exc)


def bulk(addr: str, port: int, size: int) -> str:
    try:
        reply = _exchange(addr, port, bytes(i % 251 for i in range(size)))
    except OSError as exc:
        return _err(exc)
    return f"ok:{len(reply)}:{hashlib.sha256(reply).hexdigest()}"


def dns(server: str, name: str, use_tcp: bool) -> str:
    ident = random.randrange(65536)
    qname = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    query = struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0) + qname + struct.pack("!HH", 1, 1)
    try:
        if use_tcp:
            with socket.create_connection((server, 53), timeout=TIMEOUT) as conn:
                conn.sendall(struct.pack("!H", len(query)) + query)
                size = struct.unpack("!H", conn.recv(2))[0]
                reply = b""
                while len(reply) < size:
                    chunk = conn.recv(size - len(reply))
                    if not chunk:
                        break
                    reply += chunk
        else:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.settimeout(TIMEOUT)
                sock.sendto(query, (server, 53))
                reply = sock.recv(4096)
    except OSError as exc:
        return _err(exc)
    if len(reply) < 12 or struct.unpack("!H", reply[:2])[0] != ident:
        return "err:bad-reply"
    if reply[3] & 0x0F == 3:
        return "nx"
    return "ok:" + socket.inet_ntoa(reply[-4:])


def caps() -> str:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapEff:"):
                return line.split()[1]
    return "?"


def main() -> None:
    cmd = sys.argv[1]
    if cmd == "tcp":
        print(tcp(sys.argv[2], int(sys.argv[3])))
    elif cmd == "bulk":
        print(bulk(sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
    elif cmd == "echo":
        print(echo(sys.argv[2], int(sys.argv[3]), sys.argv[4]))
    elif cmd == "dns":
        print(dns(sys.argv[2], sys.argv[3], len(sys.argv) > 4 and sys.argv[4] == "tcp"))
    elif cmd == "caps":
        print(caps())


if __name__ == "__main__":
    main()
