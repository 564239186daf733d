"""``none``: a network namespace with only loopback up; nothing outside is reachable."""

from __future__ import annotations

from . import ip
from .base import NO_RESOLVER


class NoNetwork:
    """A fresh netns holds only ``lo``; bringing it up is all there is to do."""

    unshare_net = True
    net_raw_safe = True  # raw sockets reach nothing more than loopback either

    def resolv_conf(self) -> str:
        return NO_RESOLVER

    def attach(self, ns_pid: int) -> None:
        ip.batch(["link set dev lo up"], ns_pid=ns_pid)

    def close(self) -> None:
        """Nothing to remove: the namespace dies with the sandbox."""
