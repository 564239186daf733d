"""Network modes end to end, against the test topology (namespaces made by the tests).

Every address contacted is in a namespace the test bench made (198.51.100.1 "internet",
192.168.213.1 "LAN", 169.254.213.1 link-local) or on loopback.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import net_topology as topo
import pytest
from net_fakesandbox import FakeSandbox

from coop_build.paths import CoopPaths
from coop_run.sandbox.network.modes import network_for, reap_stale
from coop_run.sandbox.network.state import state_path
from support.bench import CoopEnv
from support.procs import wait_for

pytestmark = pytest.mark.usefixtures("topology")
IS_ROOT = os.geteuid() == 0
TIMINGS: dict[str, list[float]] = {}


def _paths(env: CoopEnv) -> CoopPaths:
    return CoopPaths(env.coop_home)


def _host_leftovers() -> str:
    """Everything of ours (veth modes) visible on the host: links, addresses, routes, tables."""
    out = [subprocess.run(argv, capture_output=True, text=True, check=False).stdout
           for argv in (["ip", "-o", "link"], ["ip", "-o", "addr"], ["ip", "route"])]
    found = [line for text in out for line in text.splitlines()
             if "coop" in line.split("coopt-")[0] or "10.89." in line]
    if IS_ROOT:
        tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True,
                                check=True).stdout
        found += [t for t in tables.splitlines() if "coop" in t]
    return "\n".join(found)


def _pasta_pids() -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                comm = Path(f"/proc/{entry}/comm").read_text().strip()
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if comm in ("pasta", "passt", "passt.avx2") and stat.split(")")[-1].split()[0] != "Z":
                pids.append(int(entry))
    return pids


def test_topology_is_reachable_from_the_host() -> None:
    """Positive control: everything the sandboxes must not reach is reachable from here."""
    for addr in (topo.INET_ADDR, topo.LAN_ADDR, topo.LINKLOCAL_ADDR):
        assert topo.reachable(addr), addr


def test_none_reaches_nothing(sandbox: FakeSandbox, coop_env: CoopEnv,
                              loopback_service: int) -> None:
    mode = network_for("none", session="n1", paths=_paths(coop_env))
    assert mode.unshare_net
    start = time.perf_counter()
    mode.attach(sandbox.pid)
    TIMINGS.setdefault("none attach", []).append(time.perf_counter() - start)
    # attach() adds nothing; loopback is the init's (test_sandbox checks it is up there).
    assert "lo" not in sandbox.run("ip", "-o", "link", "show", "up")
    assert sandbox.run("ip", "link", "set", "lo", "up", drop_caps=False) == ""
    assert len(sandbox.run("ip", "-o", "link").splitlines()) == 1
    for addr in (topo.INET_ADDR, topo.LAN_ADDR, topo.LINKLOCAL_ADDR):
        assert sandbox.probe("tcp", addr, "80") == "err:ENETUNREACH"
    assert sandbox.probe("tcp", "127.0.0.1", str(loopback_service)) == "err:ECONNREFUSED"
    assert "nameserver 127.0.0.1" in mode.resolv_conf()
    mode.close()
    mode.close()


def test_host_shares_the_host_stack(tmp_path: Path, coop_env: CoopEnv) -> None:
    resolv = tmp_path / "r.conf"
    resolv.write_text("nameserver 198.51.100.1\n")
    mode = network_for("host", session="h1", paths=_paths(coop_env), resolv_path=resolv)
    assert not mode.unshare_net
    assert mode.resolv_conf() == "nameserver 198.51.100.1\n"
    mode.attach(os.getpid())
    mode.close()


def _check_veth(mode_name: str, sandbox: FakeSandbox, env: CoopEnv, resolv: Path,
                loopback_service: int, *, rootless: bool | None) -> None:
    paths = _paths(env)
    mode = network_for("veth", session="v1", paths=paths, resolv_path=resolv,
                       rootless=rootless)
    conf = mode.resolv_conf()
    nameserver = conf.split()[1]
    try:
        start = time.perf_counter()
        mode.attach(sandbox.pid)  # inside the try: a half-done attach is closed too
        TIMINGS.setdefault(f"{mode_name} attach", []).append(time.perf_counter() - start)
        assert state_path(paths, "v1").exists()
        # The agent's view: no CAP_NET_ADMIN / CAP_NET_RAW.
        caps = int(sandbox.probe("caps"), 16)
        assert not caps & (1 << 12) and not caps & (1 << 13)
        assert sandbox.probe("tcp", topo.INET_ADDR, "80") == "ok:internet"
        assert sandbox.probe("dns", nameserver, "internet.coop.test") == "ok:198.51.100.1"
        assert sandbox.probe("dns", nameserver, "internet.coop.test", "tcp") == \
            "ok:198.51.100.1"
        assert sandbox.probe("dns", nameserver, "nope.coop.test") == "nx"
        for addr in (topo.LAN_ADDR, topo.LINKLOCAL_ADDR):
            assert sandbox.probe("tcp", addr, "80").startswith("err:"), addr
        # DNS straight to the LAN/internet resolver host is filtered like anything else.
        assert sandbox.probe("dns", topo.LAN_ADDR, "internet.coop.test").startswith("err:")
        # The host's loopback service is not reachable, whatever the sandbox tries.
        assert sandbox.probe("tcp", "127.0.0.1", str(loopback_service)).startswith("err:")
        assert sandbox.probe("tcp", nameserver, str(loopback_service)).startswith("err:")
        # The rules cannot be lifted from inside.
        assert "Operation not permitted" in sandbox.run("nft", "flush", "ruleset")
        assert "Operation not permitted" in sandbox.run("ip", "route", "del", "default")
        assert sandbox.probe("tcp", topo.LAN_ADDR, "80").startswith("err:")
        assert sandbox.probe("tcp", topo.INET_ADDR, "80") == "ok:internet"
    finally:
        start = time.perf_counter()
        mode.close()
        TIMINGS.setdefault(f"{mode_name} close", []).append(time.perf_counter() - start)
    mode.close()
    assert not state_path(paths, "v1").exists()


@pytest.mark.rootonly
def test_veth_root(sandbox: FakeSandbox, coop_env: CoopEnv, resolv: Path,
                   loopback_service: int) -> None:
    _check_veth("veth-root", sandbox, coop_env, resolv, loopback_service, rootless=False)
    assert _host_leftovers() == ""


@pytest.mark.rootonly
def test_veth_root_host_end_answers_dns_only(sandbox: FakeSandbox, coop_env: CoopEnv,
                                             resolv: Path) -> None:
    """A service on all the host's addresses is not reachable through the host end."""
    import socket

    srv = socket.socket()
    srv.bind(("0.0.0.0", 0))
    srv.listen(4)
    mode = network_for("veth", session="v2", paths=_paths(coop_env), resolv_path=resolv,
                       rootless=False)
    try:
        mode.attach(sandbox.pid)
        host_end = mode.resolv_conf().split()[1]
        assert sandbox.probe("tcp", host_end, str(srv.getsockname()[1])) == \
            "err:EHOSTUNREACH"
    finally:
        mode.close()
        srv.close()


def test_veth_rootless(sandbox: FakeSandbox, coop_env: CoopEnv, resolv: Path,
                       loopback_service: int) -> None:
    before = set(_pasta_pids())
    _check_veth("veth-user", sandbox, coop_env, resolv, loopback_service, rootless=True)
    # pasta forks through intermediate processes that may still be exiting.
    wait_for(lambda: set(_pasta_pids()) <= before, 5.0, "pasta to be gone")


def test_veth_default_flavour_follows_privileges(coop_env: CoopEnv) -> None:
    mode = network_for("veth", session="v3", paths=_paths(coop_env))
    assert type(mode).__name__ == ("VethRootNetwork" if IS_ROOT else "VethUserNetwork")


@pytest.mark.parametrize("rootless", [pytest.param(False, marks=pytest.mark.rootonly), True])
def test_reap_stale_after_owner_died(coop_env: CoopEnv, resolv: Path, rootless: bool) -> None:
    """The owner dies without close(): the next reap_stale removes what it made."""
    paths = _paths(coop_env)
    before_pasta = set(_pasta_pids())
    with FakeSandbox() as sb:
        child = os.fork()
        if child == 0:  # the owner: attach, then die without closing
            try:
                network_for("veth", session="dead", paths=paths, resolv_path=resolv,
                            rootless=rootless).attach(sb.pid)
            finally:
                os._exit(0)
        _, status = os.waitpid(child, 0)
        assert status == 0
        assert state_path(paths, "dead").exists()
        if rootless:
            assert set(_pasta_pids()) - before_pasta
        else:
            assert _host_leftovers() != ""
        reap_stale(paths)
        assert not state_path(paths, "dead").exists()
        wait_for(lambda: set(_pasta_pids()) <= before_pasta, 5.0, "pasta to be gone")
        if not rootless:
            assert _host_leftovers() == ""


@pytest.fixture(scope="module", autouse=True)
def report_timings() -> Iterator[None]:
    """Prints the median attach/close times of this module's tests when it ends."""
    yield
    lines = [f"{name}: median {statistics.median(v) * 1000:.1f} ms (n={len(v)})"
             for name, v in sorted(TIMINGS.items()) if v]
    if lines:
        print("\n" + "\n".join(lines))


@pytest.mark.rootonly
@pytest.mark.slow
def test_veth_root_100_cycles_leave_nothing(coop_env: CoopEnv, resolv: Path) -> None:
    paths = _paths(coop_env)
    attach: list[float] = []
    close: list[float] = []
    with FakeSandbox() as sb:
        for i in range(100):
            mode = network_for("veth", session=f"c{i}", paths=paths, resolv_path=resolv,
                               rootless=False)
            mode.resolv_conf()
            t0 = time.perf_counter()
            # One sandbox for all cycles: attach moves a fresh peer in, close removes it.
            try:
                mode.attach(sb.pid)
                t1 = time.perf_counter()
            finally:
                mode.close()  # also after a failed attach: nothing of ours may stay
            attach.append(t1 - t0)
            close.append(time.perf_counter() - t1)
        assert sb.run("ip", "-o", "link").count("eth0") == 0
    assert _host_leftovers() == ""
    assert not list(paths.sessions.glob("*/network.json"))
    TIMINGS.setdefault("veth-root attach (100 cycles)", []).extend(attach)
    TIMINGS.setdefault("veth-root close (100 cycles)", []).extend(close)
