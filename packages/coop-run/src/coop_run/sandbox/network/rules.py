"""Pure rule generation: what a session may not reach, as nftables text.

No I/O here: the modes pass in the host's networks and addresses, and get back the text
they feed to ``nft -f``. IPv6 is simply absent from sandboxes (all of it refused), so the
rules only need IPv4 ranges.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

from coop_run.sandbox.network.base import DNS_PORT

IPv4Net = ipaddress.IPv4Network

# Destinations no session may reach: "this network", RFC 1918, CGNAT, loopback, link-local,
# IETF protocol assignments, multicast, reserved and limited broadcast.
REFUSED_V4: tuple[str, ...] = (
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.168.0.0/16",
    "224.0.0.0/4",
    "240.0.0.0/4",
)

REJECT = "reject with icmpx admin-prohibited"
_SAFE_COMMENT = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
LOOPBACK = ipaddress.IPv4Address("127.0.0.1")

Endpoint = tuple[ipaddress.IPv4Address, int]


def refused_networks(
    host_networks: Iterable[IPv4Net] = (), host_addresses: Iterable[ipaddress.IPv4Address] = ()
) -> list[IPv4Net]:
    """The fixed refused ranges plus the host's own subnets and addresses, collapsed.

    Collapsing matters: nft refuses overlapping intervals in one anonymous set.
    """
    nets = [ipaddress.IPv4Network(n) for n in REFUSED_V4]
    nets += [ipaddress.IPv4Network(n, strict=False) for n in host_networks]
    nets += [ipaddress.IPv4Network(f"{a}/32") for a in host_addresses]
    return list(ipaddress.collapse_addresses(nets))


def proxy_openings(proxies: Iterable[tuple[str, int]], refused: Iterable[IPv4Net]
                   ) -> tuple[list[int], list[Endpoint]]:
    """What a ``veth`` session's inherited proxies need: the ports of the host's
    127.0.0.1 to forward to the session's own 127.0.0.1 (not 53, the session's DNS), and
    the refused (address, TCP port) pairs to open. Public addresses need nothing; other
    loopback addresses, anything not IPv4 and bad ports are left out: only this much
    of the host is ever opened, and only for an inherited proxy."""
    refused = list(refused)
    ports: dict[int, None] = {}
    opened: dict[Endpoint, None] = {}
    for host, port in proxies:
        try:
            addr = ipaddress.IPv4Address(host)
        except ValueError:
            continue
        if not 0 < port < 65536:
            continue
        if addr == LOOPBACK:
            if port != DNS_PORT:
                ports[port] = None
        elif not addr.is_loopback and any(addr in net for net in refused):
            opened[(addr, port)] = None
    return list(ports), list(opened)


def _accepts(opened: Iterable[Endpoint], prefix: str = "") -> str:
    """One accept rule per opened (address, TCP port), each on its own line."""
    return "".join(f"        {prefix}ip daddr {addr} tcp dport {port} accept\n"
                   for addr, port in opened)


def nft_set(nets: Iterable[IPv4Net]) -> str:
    """An anonymous nft set literal."""
    return "{ " + ", ".join(str(n) for n in nets) + " }"


def _comment(session: str) -> str:
    return f'comment "coop session {session}"' if _SAFE_COMMENT.match(session) else ""


def root_table(
    *,
    table: str,
    link: str,
    host_ip: ipaddress.IPv4Address,
    sandbox_ip: ipaddress.IPv4Address,
    refused: Iterable[IPv4Net],
    session: str = "",
    opened: Iterable[Endpoint] = (),
) -> str:
    """The per-session table for ``veth`` as root: filter, DNS exception and NAT.

    Traffic from the session may only be forwarded to non-refused IPv4 destinations with
    the session's own source address; to the host itself only DNS to the host end; nothing
    may open a connection into the session. The host end's address answers DNS only to the
    session (not to the LAN, which could otherwise route to it through the host).
    ``opened`` (an inherited proxy's refused address and TCP port) is accepted both ways
    out: forwarded, or delivered to the host when the address is one of its own.
    """
    refused_set = nft_set(refused)
    opened = list(opened)
    forwarded = _accepts(opened)
    delivered = _accepts(opened, f'iifname "{link}" ip saddr {sandbox_ip} ')
    return f"""table inet {table} {{
    {_comment(session)}
    chain forward {{
        type filter hook forward priority filter - 5; policy accept;
        iifname "{link}" jump from_session
        oifname "{link}" ct state established,related accept
        oifname "{link}" drop
    }}
    chain from_session {{
        meta nfproto != ipv4 drop
        ip saddr != {sandbox_ip} drop
{forwarded}        ip daddr {refused_set} {REJECT}
        accept
    }}
    chain input {{
        type filter hook input priority filter - 5; policy accept;
        iifname "{link}" ip saddr {sandbox_ip} ip daddr {host_ip} udp dport 53 accept
        iifname "{link}" ip saddr {sandbox_ip} ip daddr {host_ip} tcp dport 53 accept
{delivered}        iifname "{link}" meta nfproto ipv4 {REJECT}
        iifname "{link}" drop
        iifname != {{ "{link}", "lo" }} ip daddr {host_ip} drop
    }}
    chain postrouting {{
        type nat hook postrouting priority srcnat - 5; policy accept;
        ip saddr {sandbox_ip} oifname != "{link}" masquerade
    }}
}}
"""


def inside_table(*, refused: Iterable[IPv4Net], opened: Iterable[Endpoint] = ()) -> str:
    """The table installed inside the session's netns for rootless ``veth`` (pasta).

    Loopback stays open: DNS is the sandbox's own 127.0.0.1:53, which pasta maps to our
    forwarder (and an inherited proxy's port, which pasta maps to the host's 127.0.0.1);
    everything refused is rejected before pasta would turn it into a host socket, but
    ``opened`` (an inherited proxy's refused address and TCP port).
    """
    refused_set = nft_set(refused)
    accepted = _accepts(opened)
    return f"""table inet coop {{
    chain output {{
        type filter hook output priority filter - 5; policy accept;
        oifname "lo" accept
        meta nfproto != ipv4 {REJECT}
{accepted}        ip daddr {refused_set} {REJECT}
    }}
    chain forward {{
        type filter hook forward priority filter - 5; policy drop;
    }}
}}
"""
