"""The contract between the sandbox core and a network mode (docs/architecture.md).

The core asks ``unshare_net`` before creating namespaces, writes ``resolv_conf()`` to
``/etc/resolv.conf`` inside, calls ``attach(pid)`` from the host side once the network
namespace exists and before anything runs in it, and ``close()`` at teardown.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class NetworkMode(Protocol):
    """One session's network: created by ``network_for``, owned by the session's supervisor."""

    unshare_net: bool
    # Whether a raw socket inside cannot get around the mode's filter, so processes inside
    # may keep CAP_NET_RAW (``sandbox.host.child_capabilities``). A mode that filters in
    # the sandbox's own netns says False: a packet socket there bypasses its nft hook.
    net_raw_safe: bool

    def resolv_conf(self) -> str:
        """Contents of ``/etc/resolv.conf`` inside the sandbox."""
        ...

    def attach(self, ns_pid: int) -> None:
        """Configure the namespace of ``ns_pid`` completely (host side, before it runs)."""
        ...

    def close(self) -> None:
        """Remove everything ``attach`` (or ``resolv_conf``) made; idempotent."""
        ...


DNS_PORT = 53
"""Where a session's resolver answers (rootless veth: its DNS forwarder on 127.0.0.1), so
no inherited proxy may take that port."""

# Written inside sandboxes that must not resolve anything: no nameserver answers there.
NO_RESOLVER = (
    "# coop: this session has no network\nnameserver 127.0.0.1\n"
    "options attempts:1 timeout:1\n"
)
