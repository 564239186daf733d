"""``veth`` without privileges: pasta (Debian's passt) gives the sandbox a tap device.

pasta translates the sandbox's packets into ordinary sockets of the user on the host, so
the sandbox reaches what the user could reach. What it may reach is narrowed inside the
sandbox's own network namespace by an nft table installed before anything runs there;
the agent runs without CAP_NET_ADMIN (and CAP_NET_RAW: a packet socket on the tap would
bypass the output hook), so it cannot lift it.

pasta is started with no port forwarding into the sandbox (no ``-t/-u``), only the
ports below from the sandbox to the host's loopback (``-T/-U``), and ``--no-map-gw`` (the
gateway address is not the host's loopback). DNS: the sandbox asks its own 127.0.0.1:53;
pasta maps that port (UDP and TCP, nothing else) to our forwarder (dns.py) on an ephemeral
port of the host's 127.0.0.1, which relays to the host's resolvers. An inherited proxy on
the host's 127.0.0.1 gets its TCP port mapped the same way (the session's 127.0.0.1:PORT
is the host's); one at a refused address (the LAN, the host's own) is let through the
inside table for its TCP port only.
Why pasta and not slirp4netns: pasta can attach to an existing namespace by pid, turn off
every port mapping and the gateway mapping but one namespace-to-host port (DNS), and
needs no helper inside the sandbox.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from coop_build.paths import CoopPaths
from coop_run.errors import NetworkError
from coop_run.layout import RunLayout
from coop_run.procs import proc_start_time

from . import ip, nft, pasta, rules
from .dns import DnsForwarder, Upstream, upstreams_from
from .host import HOST_RESOLV
from .state import NetState, write_state
from .veth import VethSession

logger = logging.getLogger(__name__)

MODE = "veth-user"



class VethUserNetwork(VethSession):
    """User-mode networking through pasta, filtered inside the sandbox."""

    unshare_net = True
    # The filter is inside the sandbox's netns: a packet socket on the tap bypasses it, so
    # the sandbox drops CAP_NET_RAW for this mode (sandbox.host.child_capabilities).
    net_raw_safe = False

    def __init__(self, *, session: str, paths: CoopPaths, resolv_path: Path = HOST_RESOLV,
                 dns_servers: list[Upstream] | None = None,
                 proxies: Sequence[tuple[str, int]] = ()) -> None:
        super().__init__(session=session, paths=paths)
        self.resolv_path = resolv_path
        self.dns_servers = dns_servers
        self.proxies = tuple(proxies)

    def resolv_conf(self) -> str:
        return "nameserver 127.0.0.1\n"

    def _resolvers(self) -> list[Upstream]:
        if self.dns_servers is not None:
            return self.dns_servers
        return upstreams_from(self.resolv_path)

    def attach(self, ns_pid: int) -> None:
        if self.state is not None:
            raise NetworkError("veth network is already attached")
        if not pasta.tun_usable():
            raise NetworkError("rootless veth needs /dev/net/tun readable and writable by you "
                               "(Debian's udev makes it 0666; or use network.mode none)")
        nets, addrs = ip.host_ipv4()
        refused = rules.refused_networks(nets, addrs)
        ports, opened = rules.proxy_openings(self.proxies, refused)
        nft.apply(rules.inside_table(refused=refused, opened=opened), ns_pid=ns_pid)
        state = NetState.for_current_process(MODE, self.session)
        write_state(self.paths, state)
        self.state = state
        pid_file = RunLayout(self.paths).session(self.session).pasta_pid
        try:
            self.forwarder = DnsForwarder("127.0.0.1", self._resolvers(), port=0)
            self.forwarder.start()
            pid = pasta.start(pasta.pasta_argv(ns_pid, dns_port=self.forwarder.port,
                                               pid_file=pid_file, forward=ports), pid_file)
            state.helper_pid, state.helper_start = pid, proc_start_time(pid)
            write_state(self.paths, state)
        except BaseException:
            self.close()
            raise
        logger.debug("session %s: pasta %d attached to %d", self.session, pid, ns_pid)

