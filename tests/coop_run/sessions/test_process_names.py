"""What ``ps`` and ``top`` show of coop's processes: ``coop daemon``, ``coop zygote``,
``coop supervisor NAME`` (cmdline and the kernel's comm), with their environment still
readable in ``/proc``, where coop and these tests find them."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from session_support import Coop, ls_json

from support.procs import children, wait_for

pytestmark = pytest.mark.asuser


def _ps(pid: int) -> str:
    """``ps -o comm=,args=``: comm is cut to 15 bytes by the kernel."""
    return subprocess.run(["ps", "-o", "comm=,args=", "-p", str(pid)], capture_output=True,
                          text=True, check=True, timeout=30).stdout.strip()


def test_ps_shows_the_daemon_zygote_and_supervisor_by_name(coop: Coop,
                                                           host_workspace: Path) -> None:
    assert coop("-d", cwd=host_workspace).returncode == 0
    assert coop("-d", "-n", "other", cwd=host_workspace).returncode == 0
    daemon = coop.daemon_pid()
    assert daemon is not None
    zygote = wait_for(lambda: next((c.pid for c in children(daemon)
                                    if c.cmdline == "coop zygote"), None),
                      20.0, "the daemon's zygote to take its title")
    supervisors = {s["name"]: s["pid"] for s in ls_json(coop, host_workspace)}
    expected = {
        daemon: "coop daemon     coop daemon",
        zygote: "coop zygote     coop zygote",
        supervisors["proj"]: "coop supervisor coop supervisor proj",
        supervisors["other"]: "coop supervisor coop supervisor other",
    }
    for pid, shown in expected.items():
        assert _ps(pid) == shown, pid
        assert Path(f"/proc/{pid}/comm").read_text() == shown[:15].rstrip() + "\n"
        # the title leaves the environment alone: rediscovery reads COOP_SESSION there
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        assert f"COOP_HOME={coop.coop_home}".encode() in environ, pid
