"""This machine's addresses, and the links ``coop serve`` prints (SPEC 8): the local URL,
then one network URL per address a phone on the LAN could use.

IPv4 addresses come from the kernel's interface list (``SIOCGIFCONF``), IPv6 ones from
``/proc/net/if_inet6``; link-local IPv6 addresses are left out of links (they need a zone
that browsers do not take in a URL).
"""

from __future__ import annotations

import array
import fcntl
import ipaddress
import logging
import socket
import struct
from pathlib import Path

from coop_run.web.auth import Address, parse_address

logger = logging.getLogger(__name__)

_SIOCGIFCONF = 0x8912
_IFREQ = 40  # sizeof(struct ifreq) on 64-bit Linux
_IF_INET6 = Path("/proc/net/if_inet6")


def _ipv4_addresses() -> list[ipaddress.IPv4Address]:
    found: list[ipaddress.IPv4Address] = []
    buffer = array.array("B", bytes(_IFREQ * 128))
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            address, _ = buffer.buffer_info()
            request = struct.pack("iL", len(buffer), address)
            length = struct.unpack("iL", fcntl.ioctl(sock.fileno(), _SIOCGIFCONF, request))[0]
    except OSError as exc:
        logger.info("cannot list IPv4 interfaces: %s", exc)
        return found
    raw = buffer.tobytes()
    for offset in range(0, length, _IFREQ):
        found.append(ipaddress.IPv4Address(raw[offset + 20:offset + 24]))
    return found


def _ipv6_addresses() -> list[ipaddress.IPv6Address]:
    try:
        lines = _IF_INET6.read_text().splitlines()
    except OSError:
        return []
    return [ipaddress.IPv6Address(int(line.split()[0], 16)) for line in lines if line.split()]


def local_addresses() -> list[Address]:
    """Every address of this machine's interfaces, loopback included."""
    return [*_ipv4_addresses(), *_ipv6_addresses()]


def url_host(address: str) -> str:
    """``address`` as a URL's host: an IPv6 address in brackets."""
    parsed = parse_address(address)
    if isinstance(parsed, ipaddress.IPv6Address):
        return f"[{parsed}]"
    return address


def link_hosts(bind_host: str, addresses: list[Address]) -> tuple[str, list[str]]:
    """Where the server is reached: the local host (for this machine's browser), then
    the network hosts (each address a LAN peer may use; none for a loopback server)."""
    bound = parse_address(bind_host)
    if bound is None:  # a host name: reached by that name
        return "localhost" if bind_host == "localhost" else bind_host, (
            [] if bind_host == "localhost" else [bind_host])
    if bound.is_loopback:
        return url_host(str(bound)), []
    if not bound.is_unspecified:
        return url_host(str(bound)), [url_host(str(bound))]
    family = 4 if bound.version == 4 else 6
    network = [url_host(str(a)) for a in addresses
               if not a.is_loopback and not a.is_link_local and
               (a.version == 4 or family == 6)]
    local = "127.0.0.1" if family == 4 else "[::1]"
    return local, list(dict.fromkeys(network))


def links(bind_host: str, port: int, token: str,
          addresses: list[Address] | None = None) -> list[str]:
    """The local URL with ``token``, then one per network host."""
    local, network = link_hosts(bind_host, local_addresses() if addresses is None
                                else addresses)
    return [f"http://{host}:{port}/?token={token}" for host in (local, *network)]
