"""Run inside a sandbox-like namespace by the tests; prints one result line.

    probe.py tcp ADDR PORT          ok:<banner> | err:<errno name>
    probe.py dns SERVER NAME [tcp]  ok:<address> | nx | err:<errno name>
    probe.py caps                   the effective capability mask (hex)
Stdlib only (runs under /usr/bin/python3).
"""

from __future__ import annotations

import errno
import random
import socket
import struct
import sys

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
    elif cmd == "dns":
        print(dns(sys.argv[2], sys.argv[3], len(sys.argv) > 4 and sys.argv[4] == "tcp"))
    elif cmd == "caps":
        print(caps())


if __name__ == "__main__":
    main()
