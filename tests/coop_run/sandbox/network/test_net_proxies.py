"""Inherited proxies in ``veth`` (``[network] inherit``), against the test topology.

A proxy on the host's 127.0.0.1 reaches the session at its own 127.0.0.1 on the same
port (root: relay.py; rootless: pasta), one on the LAN is opened for its TCP port only;
nothing else of the host's loopback or of the LAN opens. Every address contacted is on
loopback or in a namespace the test bench made.
"""

from __future__ import annotations

import contextlib
import hashlib
import socket
from pathlib import Path

import net_topology as topo
import pytest
from net_fakesandbox import FakeSandbox

from coop_build.paths import CoopPaths
from coop_run.sandbox.network.modes import network_for
from support.bench import CoopEnv
from support.loopback import echo_service

pytestmark = pytest.mark.usefixtures("topology")
FLAVOURS = [pytest.param(False, marks=pytest.mark.rootonly, id="root"),
            pytest.param(True, id="rootless")]


def _connects(addr: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((addr, port), timeout=2.0):
        return True
    return False


@pytest.mark.parametrize("rootless", FLAVOURS)
def test_veth_opens_exactly_the_inherited_proxies(sandbox: FakeSandbox, coop_env: CoopEnv,
                                                  resolv: Path, loopback_service: int,
                                                  rootless: bool) -> None:
    # The host reaches all of these: only the filter stands between them and the session.
    assert _connects(topo.LAN_ADDR, 53) and _connects(topo.LINKLOCAL_ADDR, 80)
    with echo_service() as port:
        mode = network_for("veth", session="px", paths=CoopPaths(coop_env.coop_home),
                           resolv_path=resolv, rootless=rootless,
                           proxies=[("127.0.0.1", port), (topo.LAN_ADDR, 80)])
        try:
            mode.attach(sandbox.pid)
            # The host's proxy at the session's own 127.0.0.1, both ways, several times.
            for text in ("hello", "again"):
                assert sandbox.probe("echo", "127.0.0.1", str(port), text) == f"ok:proxy:{text}"
            size = 4 * 1024 * 1024
            sent = bytes(i % 251 for i in range(size))
            assert sandbox.probe("bulk", "127.0.0.1", str(port), str(size)) == \
                f"ok:{size + 6}:{hashlib.sha256(b'proxy:' + sent).hexdigest()}"
            assert sandbox.probe("tcp", topo.LAN_ADDR, "80") == "ok:lan"
            # Nothing else: another loopback port, another port of the LAN proxy's host,
            # the same port at another refused address.
            assert sandbox.probe("tcp", "127.0.0.1", str(loopback_service)).startswith("err:")
            assert sandbox.probe("tcp", topo.LAN_ADDR, "53").startswith("err:")
            assert sandbox.probe("tcp", topo.LINKLOCAL_ADDR, "80").startswith("err:")
            assert sandbox.probe("tcp", topo.INET_ADDR, "80") == "ok:internet"
            assert "Operation not permitted" in sandbox.run("nft", "flush", "ruleset")
        finally:
            mode.close()
        mode.close()
        # Gone with the session's network: the relay (root) or pasta (rootless).
        assert sandbox.probe("echo", "127.0.0.1", str(port), "x").startswith("err:")


@pytest.mark.parametrize("rootless", FLAVOURS)
def test_veth_without_inherited_proxies_opens_nothing(sandbox: FakeSandbox,
                                                      coop_env: CoopEnv, resolv: Path,
                                                      rootless: bool) -> None:
    """The same proxies, not inherited: unreachable (as test_net_modes shows for any)."""
    with echo_service() as port:
        mode = network_for("veth", session="py", paths=CoopPaths(coop_env.coop_home),
                           resolv_path=resolv, rootless=rootless)
        try:
            mode.attach(sandbox.pid)
            assert sandbox.probe("echo", "127.0.0.1", str(port), "x").startswith("err:")
            assert sandbox.probe("tcp", topo.LAN_ADDR, "80").startswith("err:")
        finally:
            mode.close()
