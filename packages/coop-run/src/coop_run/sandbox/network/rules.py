"""Pure rule generation: what a session may not reach, as nftables text.

No I/O here: the modes pass in the host's networks and addresses, and get back the text
they feed to ``nft -f``. IPv6 is simply absent from sandboxes (all of it refused), so the
rules only need IPv4 ranges.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

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
) -> str:
    """The per-session table for ``veth`` as root: filter, DNS exception and NAT.

    Traffic from the session may only be forwarded to non-refused IPv4 destinations with
    the session's own source address; to the host itself only DNS to the host end; nothing
    may open a connection into the session. The host end's address answers DNS only to the
    session (not to the LAN, which could otherwise route to it through the host).
    """
    refused_set = nft_set(refused)
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
        ip daddr {refused_set} {REJECT}
        accept
    }}
    chain input {{
        type filter hook input priority filter - 5; policy accept;
        iifname "{link}" ip saddr {sandbox_ip} ip daddr {host_ip} udp dport 53 accept
        iifname "{link}" ip saddr {sandbox_ip} ip daddr {host_ip} tcp dport 53 accept
        iifname "{link}" meta nfproto ipv4 {REJECT}
        iifname "{link}" drop
        iifname != {{ "{link}", "lo" }} ip daddr {host_ip} drop
    }}
    chain postrouting {{
        type nat hook postrouting priority srcnat - 5; policy accept;
        ip saddr {sandbox_ip} oifname != "{link}" masquerade
    }}
}}
"""


def inside_table(*, refused: Iterable[IPv4Net]) -> str:
    """The table installed inside the session's netns for rootless ``veth`` (pasta).

    Loopback stays open: DNS is the sandbox's own 127.0.0.1:53, which pasta maps to our
    forwarder; everything refused is rejected before pasta would turn it into a host socket.
    """
    refused_set = nft_set(refused)
    return f"""table inet coop {{
    chain output {{
        type filter hook output priority filter - 5; policy accept;
        oifname "lo" accept
        meta nfproto != ipv4 {REJECT}
        ip daddr {refused_set} {REJECT}
    }}
    chain forward {{
        type filter hook forward priority filter - 5; policy drop;
    }}
}}
"""
