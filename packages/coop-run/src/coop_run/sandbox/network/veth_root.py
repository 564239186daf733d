"""``veth`` as root: a veth pair per session, a /30 of coop's range, NAT and a filter.

Addresses: ``subnet`` (default 10.89.0.0/16) is carved into /30 slots; slot N has the
host end at .1 and the sandbox at .2 of its /30, on links ``coopN`` (host) and ``eth0``
(inside). A slot is claimed under the COOP_HOME network lock, skipping slots recorded by
other sessions and slots overlapping host routes at least as specific as ``subnet``; the
kernel refusing a duplicate link name settles races with other COOP_HOMEs. One nft table
``inet coop_N`` per session holds the filter, the DNS exception and the masquerade; the
DNS forwarder (dns.py) answers on the host end. An inherited proxy on the host's
127.0.0.1 is relayed to the session's own 127.0.0.1 on its port (relay.py); one at a
refused address (the LAN, the host's own) is opened for its TCP port only.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Sequence
from pathlib import Path

from coop_build.paths import CoopPaths
from coop_run.errors import NetworkError

from . import ip, nft, rules
from .dns import DnsForwarder, Upstream, upstreams_from
from .host import HOST_RESOLV
from .relay import LoopbackRelay
from .state import NetState, all_states, network_lock, remove_state, write_state
from .veth import VethSession

logger = logging.getLogger(__name__)

MODE = "veth-root"
DEFAULT_SUBNET = "10.89.0.0/16"
LINK_PREFIX = "coop"
TABLE_PREFIX = "coop_"
IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")
_LINK_RE = re.compile(rf"^{LINK_PREFIX}(\d+)p?$")
CLAIM_ATTEMPTS = 8


def slot_addresses(
    subnet: ipaddress.IPv4Network, slot: int
) -> tuple[ipaddress.IPv4Network, ipaddress.IPv4Address, ipaddress.IPv4Address]:
    """The /30 of ``slot`` and its host-end and sandbox addresses."""
    if not 0 <= slot < slot_count(subnet):
        raise NetworkError(f"slot {slot} is outside {subnet}")
    base = int(subnet.network_address) + 4 * slot
    net = ipaddress.IPv4Network((base, 30))
    return net, ipaddress.IPv4Address(base + 1), ipaddress.IPv4Address(base + 2)


def slot_count(subnet: ipaddress.IPv4Network) -> int:
    return max(0, subnet.num_addresses // 4)


def choose_slot(subnet: ipaddress.IPv4Network, used: set[int],
                routes: list[ipaddress.IPv4Network]) -> int:
    """The lowest slot not in ``used`` whose /30 overlaps no route as specific as ``subnet``.

    Broader routes (a 10.0.0.0/8 VPN route) do not block: our /30 is more specific and
    coop owns ``subnet``. A route equal to or inside ``subnet`` means someone else uses it.
    """
    blocking = [r for r in routes if r.prefixlen >= subnet.prefixlen and r.overlaps(subnet)]
    for slot in range(slot_count(subnet)):
        if slot in used:
            continue
        net = slot_addresses(subnet, slot)[0]
        if not any(net.overlaps(r) for r in blocking):
            return slot
    raise NetworkError(f"no free /30 left in {subnet} for a veth session "
                       "(host routes or other sessions use it all)")


def link_slot(name: str) -> int | None:
    """The slot encoded in one of our link names, None for other links."""
    match = _LINK_RE.match(name)
    return int(match.group(1)) if match else None


def enable_forwarding() -> None:
    """NAT needs IPv4 forwarding; it is host-wide and left on (other sessions use it)."""
    try:
        if IP_FORWARD.read_text().strip() != "1":
            IP_FORWARD.write_text("1\n")
            logger.info("enabled net.ipv4.ip_forward for veth sessions")
    except OSError as exc:
        raise NetworkError(f"cannot enable IPv4 forwarding: {exc.strerror}") from exc



class VethRootNetwork(VethSession):
    """A real veth pair with NAT; needs root (CAP_NET_ADMIN on the host)."""

    unshare_net = True
    net_raw_safe = True  # the filter is on the host's hooks: raw packets pass them too

    def __init__(self, *, session: str, paths: CoopPaths, resolv_path: Path = HOST_RESOLV,
                 upstreams: list[Upstream] | None = None,
                 subnet: str = DEFAULT_SUBNET,
                 proxies: Sequence[tuple[str, int]] = ()) -> None:
        super().__init__(session=session, paths=paths)
        self.resolv_path = resolv_path
        self.upstreams = upstreams
        self.proxies = tuple(proxies)
        self.relay: LoopbackRelay | None = None
        try:
            self.subnet = ipaddress.IPv4Network(subnet)
        except ValueError as exc:
            raise NetworkError(f"invalid veth subnet {subnet!r}: {exc}") from exc
        if self.subnet.prefixlen > 30:
            raise NetworkError(f"veth subnet {subnet} is smaller than one /30")
        self.attached = False

    @property
    def host_ip(self) -> ipaddress.IPv4Address:
        return self._claim()[1]

    @property
    def sandbox_ip(self) -> ipaddress.IPv4Address:
        return self._claim()[2]

    def resolv_conf(self) -> str:
        return f"nameserver {self.host_ip}\n"

    def _claim(self) -> tuple[ipaddress.IPv4Network, ipaddress.IPv4Address,
                              ipaddress.IPv4Address]:
        """Claims a slot once: record first, then the link pair (both ends on the host)."""
        if self.state is not None and self.state.slot is not None:
            return slot_addresses(self.subnet, self.state.slot)
        with network_lock(self.paths):
            used = {s.slot for _, s in all_states(self.paths) if s and s.slot is not None}
            used |= {n for n in map(link_slot, ip.link_names()) if n is not None}
            routes = ip.ipv4_routes()
            for _ in range(CLAIM_ATTEMPTS):
                slot = choose_slot(self.subnet, used, routes)
                link = f"{LINK_PREFIX}{slot}"
                state = NetState.for_current_process(MODE, self.session)
                state.slot, state.link = slot, link
                write_state(self.paths, state)
                try:
                    ip.batch([f"link add dev {link} type veth peer name {link}p",
                              f"link set dev {link} addrgenmode none"])
                except NetworkError as exc:
                    remove_state(self.paths, self.session)
                    if "exists" not in exc.stderr:
                        raise
                    used.add(slot)
                    continue
                self.state = state
                return slot_addresses(self.subnet, slot)
        raise NetworkError(f"could not claim a veth slot in {self.subnet}")

    def attach(self, ns_pid: int) -> None:
        if self.attached:
            raise NetworkError("veth network is already attached")
        _, host_ip, sandbox_ip = self._claim()
        assert self.state is not None and self.state.link is not None
        link = self.state.link
        try:
            ip.batch([f"link set dev {link}p netns {ns_pid} name eth0",
                      f"address add {host_ip}/30 dev {link}",
                      f"link set dev {link} up"])
            nets, addrs = ip.host_ipv4()
            refused = rules.refused_networks(nets, addrs)
            ports, opened = rules.proxy_openings(self.proxies, refused)
            self.state.table = f"{TABLE_PREFIX}{self.state.slot}"
            write_state(self.paths, self.state)
            nft.apply(rules.root_table(table=self.state.table, link=link, host_ip=host_ip,
                                       sandbox_ip=sandbox_ip, refused=refused,
                                       session=self.session, opened=opened))
            enable_forwarding()
            upstreams = self.upstreams or upstreams_from(self.resolv_path)
            self.forwarder = DnsForwarder(str(host_ip), upstreams)
            self.forwarder.start()
            ip.batch(["link set dev lo up",
                      "link set dev eth0 addrgenmode none",
                      f"address add {sandbox_ip}/30 dev eth0",
                      "link set dev eth0 up",
                      f"route add default via {host_ip} dev eth0"], ns_pid=ns_pid)
            if ports:  # the namespace's loopback is up: listen there
                self.relay = LoopbackRelay(ports)
                self.relay.start(ns_pid)
        except BaseException:
            self.close()
            raise
        self.attached = True
        logger.debug("session %s: veth %s, %s <-> %s", self.session, link, host_ip, sandbox_ip)

    def close(self) -> None:
        if self.relay is not None:
            self.relay.close()
            self.relay = None
        super().close()
        self.attached = False
