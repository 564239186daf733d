"""Fixtures for the network-mode tests: the test topology and sandbox-like namespaces."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import net_topology
import pytest
from net_fakesandbox import FakeSandbox

from support.servers import BENCH_PIDS

IS_ROOT = os.geteuid() == 0


@pytest.fixture(scope="session")
def topology() -> Iterator[None]:
    """The "internet" and "LAN" test namespaces (see net_topology.py).

    As root it is made here and removed at the end (unless ``prepare-test-network up``
    made it already); a plain user cannot make it and fails with the command to run.
    """
    if net_topology.present():
        yield
        return
    if not IS_ROOT:
        pytest.fail("the network test topology is missing: run "
                    "`scripts/prepare-test-network up` as root before the unprivileged run",
                    pytrace=False)
    pids = net_topology.up()
    BENCH_PIDS.update(pids)
    try:
        yield
    finally:
        net_topology.down()
        BENCH_PIDS.difference_update(pids)


@pytest.fixture
def sandbox() -> Iterator[FakeSandbox]:
    with FakeSandbox() as sb:
        yield sb


@pytest.fixture
def resolv(tmp_path: Path) -> Path:
    """A host resolv.conf naming the test DNS server in the "internet" namespace."""
    path = tmp_path / "resolv.conf"
    path.write_text(f"# test\nnameserver {net_topology.INET_ADDR}\n")
    return path


@pytest.fixture
def loopback_service() -> Iterator[int]:
    """A TCP service on the host's 127.0.0.1 (nothing in a sandbox may reach it)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    try:
        yield int(srv.getsockname()[1])
    finally:
        srv.close()
