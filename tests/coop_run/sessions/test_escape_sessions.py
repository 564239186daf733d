"""The escape suite's cases that need the real CLI, daemon and supervisors (the rest, on a
bare sandbox, is tests/coop_run/sandbox/test_escape.py).

A person runs ``coop`` in their home directory, so the workspace bind holds ``~/.coop``:
the daemon's socket, every supervisor's socket, every session's records. From inside the
session none of it may answer.
"""

from __future__ import annotations

import subprocess

from coop_cli import stop_started
from session_support import Coop, write_coopfile

# Reports, for each socket path in argv, what a process there gets: "absent" (nothing to
# connect to), "refused" (hung up on at the handshake) or "answered". The host's python3,
# run inside a session of ``image = "host"``.
PROBE = """
import json, socket, struct, sys
for path in sys.argv[1:]:
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    try:
        s.connect(path)
    except OSError:
        print(path, "absent")
        continue
    body = json.dumps({"version": 1}).encode()
    try:
        s.sendall(struct.pack(">I", len(body)) + body)
        print(path, "answered" if s.recv(65536) else "refused")
    except OSError:
        print(path, "refused")
"""


def test_a_session_in_the_home_directory_reaches_no_coop_socket(coop: Coop) -> None:
    """``coop`` in ``~`` with the default ``COOP_HOME`` (``~/.coop``): inside, ``.coop``
    is an empty read-only directory, and neither the daemon's socket nor the session's own
    supervisor's can be reached; outside, both answer the same probe."""
    home = coop.home
    coop_home = home / ".coop"
    coop.env["COOP_HOME"] = str(coop_home)
    try:
        write_coopfile(home, "host")
        assert coop("init", cwd=home).returncode == 0
        created = coop("-d", cwd=home)
        assert created.returncode == 0, created
        sockets = [coop_home / "sock", *coop_home.glob("sessions/*/supervisor.sock")]
        assert len(sockets) == 2, sockets  # the daemon's and the one supervisor's
        outside = subprocess.run(["/usr/bin/python3", "-c", PROBE, *map(str, sockets)],
                                 capture_output=True, text=True, timeout=30, check=True)
        assert outside.stdout.splitlines() == [f"{p} answered" for p in sockets]  # control
        inside_paths = [f"/workspace/{p.relative_to(home)}" for p in sockets]
        probe = coop("shell", "-c", f"/usr/bin/python3 -c '{PROBE}' {' '.join(inside_paths)}; "
                     "ls -A /workspace/.coop; echo listed; touch /workspace/.coop/x",
                     cwd=home)
        lines = probe.stdout.splitlines()
        assert lines[:3] == [f"{p} absent" for p in inside_paths] + ["listed"], probe
        assert probe.returncode != 0, probe  # nothing may be written there either
        assert not (coop_home / "x").exists()
    finally:
        stop_started(coop_home)
