"""Fixtures for the network-mode tests: the test topology and sandbox-like namespaces."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import net_topology
import pytest
from net_bench import provide_topology
from net_fakesandbox import FakeSandbox


@pytest.fixture(scope="session")
def topology() -> Iterator[None]:
    """The "internet" and "LAN" test namespaces (see net_topology.py and net_bench.py)."""
    yield from provide_topology()


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
