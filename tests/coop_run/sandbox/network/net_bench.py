"""The network test topology as a session fixture's body (network and escape tests).

Apart from net_topology.py, which scripts/prepare-test-network runs with the system
Python, where pytest may be missing.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import net_topology
import pytest

from support.servers import BENCH_PIDS


def provide_topology() -> Iterator[None]:
    """The "internet" and "LAN" test namespaces for as long as the generator runs.

    As root it is made here and removed at the end (unless ``prepare-test-network up``
    made it already); a plain user cannot make it and fails with the command to run.
    """
    if net_topology.present():
        yield
        return
    if os.geteuid() != 0:
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
