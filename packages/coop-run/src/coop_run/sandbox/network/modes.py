"""Choosing a session's network mode by name, and reaping what dead sessions left."""


from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from coop_build.paths import CoopPaths
from coop_run.errors import NetworkError
from coop_run.procs import alive
from coop_run.sandbox.network import veth_root, veth_user
from coop_run.sandbox.network.base import NetworkMode
from coop_run.sandbox.network.dns import Upstream
from coop_run.sandbox.network.host import HOST_RESOLV, HostNetwork
from coop_run.sandbox.network.none import NoNetwork
from coop_run.sandbox.network.state import all_states, network_lock
from coop_run.sandbox.network.veth import teardown

logger = logging.getLogger(__name__)

MODES = ("none", "host", "veth")

__all__ = ["MODES", "NetworkMode", "network_for", "reap_stale"]


def network_for(mode: str, *, session: str, paths: CoopPaths,
                resolv_path: Path = HOST_RESOLV, upstreams: list[Upstream] | None = None,
                subnet: str = veth_root.DEFAULT_SUBNET,
                rootless: bool | None = None,
                proxies: Sequence[tuple[str, int]] = ()) -> NetworkMode:
    """The network of one session. Nothing is created until ``resolv_conf``/``attach``.

    ``resolv_path`` is where the host's resolvers are read and ``upstreams`` overrides it
    (tests: a resolver on an unprivileged port); ``rootless`` forces the pasta flavour.
    ``proxies``: the (IPv4 address, TCP port) of the session's inherited proxies, which
    ``veth`` opens (``rules.proxy_openings``); the other modes need nothing for them.
    """
    if mode == "none":
        return NoNetwork()
    if mode == "host":
        return HostNetwork(resolv_path)
    if mode == "veth":
        if rootless if rootless is not None else os.geteuid() != 0:
            return veth_user.VethUserNetwork(session=session, paths=paths,
                                             resolv_path=resolv_path, dns_servers=upstreams,
                                             proxies=proxies)
        return veth_root.VethRootNetwork(session=session, paths=paths, resolv_path=resolv_path,
                                         upstreams=upstreams, subnet=subnet, proxies=proxies)
    raise NetworkError(f"unknown network mode {mode!r} (expected one of {', '.join(MODES)})")


def reap_stale(paths: CoopPaths) -> None:
    """Removes links, tables and pasta processes of sessions whose owner has died."""
    with network_lock(paths):
        for path, state in all_states(paths):
            if state is None:
                logger.warning("removing unreadable network record %s", path)
            elif alive(state.owner_pid, state.owner_start):
                continue
            elif state.mode == veth_root.MODE and os.geteuid() != 0:
                logger.warning("cannot reap root veth of session %s as a plain user",
                               state.session)
                continue
            else:
                teardown(state)
            logger.info("reaped the network of dead session %s", path.parent.name)
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
