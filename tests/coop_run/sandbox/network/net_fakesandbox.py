"""A sandbox-like namespace for the network tests, made the way the sandbox core makes it.

``FakeSandbox`` starts ``sleep`` in new user + network namespaces (uid 0 inside = the
invoking user), and runs commands in them as the agent would run: inside both
namespaces, with CAP_NET_ADMIN and CAP_NET_RAW dropped (bounding and inheritable sets).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from coop_run.sandbox.network._tools import tool_path
from support.procs import stop_pid, wait_for

HERE = Path(__file__).resolve().parent
PROBE = str(HERE / "probe.py")
PYTHON = "/usr/bin/python3"
DROP = "-net_admin,-net_raw"


def _netns(pid: int | str) -> str:
    try:
        return os.readlink(f"/proc/{pid}/ns/net")
    except OSError:
        return ""


class FakeSandbox:
    """One process in its own user+net namespaces; ``pid`` is what ``attach`` gets."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            ["unshare", "--user", "--map-root-user", "--net", "--", "sleep", "infinity"],
            stdin=subprocess.DEVNULL)
        self.pid = self.proc.pid
        mine = _netns("self")
        wait_for(lambda: _netns(self.pid) not in ("", mine), 5.0, "the test netns")

    def run(self, *argv: str, drop_caps: bool = True, timeout: float = 15.0) -> str:
        """Runs ``argv`` inside; returns stdout+stderr stripped."""
        cmd = ["nsenter", f"--target={self.pid}", "--user", "--net", "--preserve-credentials"]
        if drop_caps:
            cmd += ["setpriv", "--inh-caps", DROP, "--bounding-set", DROP, "--"]
        # By path: a user's PATH has no /usr/sbin (ip, nft), as for coop itself.
        program = argv[0] if "/" in argv[0] else tool_path(argv[0])
        out = subprocess.run([*cmd, program, *argv[1:]], capture_output=True, text=True,
                             timeout=timeout, check=False)
        return (out.stdout + out.stderr).strip()

    def probe(self, *args: str) -> str:
        return self.run(PYTHON, PROBE, *args).splitlines()[-1]

    def close(self) -> None:
        stop_pid(self.pid, timeout=2.0)
        self.proc.poll()

    def __enter__(self) -> FakeSandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
