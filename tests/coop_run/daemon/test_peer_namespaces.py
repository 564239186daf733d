"""``sockets.peer_refusal``: a coop socket talks only to our user in our user and PID
namespaces; a peer in a namespace of its own (as everything inside a sandbox is) is
refused, whatever its uid."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
from pathlib import Path

from coop_run.ipc.sockets import peer_refusal
from support.require import require

TIMEOUT = 10.0
# Connects to argv[1] and waits for the test to hang up.
CONNECT = ("import socket, sys; s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); "
           "s.recv(1)")


def _accept_from(argv: list[str], path: Path) -> tuple[str | None, subprocess.Popen[bytes]]:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(1)
    listener.settimeout(TIMEOUT)
    proc = subprocess.Popen([*argv, sys.executable, "-c", CONNECT, str(path)])
    try:
        conn, _ = listener.accept()
    except BaseException:  # it never connected (unshare refused?): leave no process behind
        proc.kill()
        proc.wait(TIMEOUT)
        raise
    finally:
        listener.close()
    with conn:
        return peer_refusal(conn), proc


def test_a_peer_of_ours_is_accepted(tmp_path: Path) -> None:
    refusal, proc = _accept_from([], tmp_path / "s")
    assert proc.wait(TIMEOUT) == 0
    assert refusal is None


def test_a_peer_in_another_user_namespace_is_refused(tmp_path: Path) -> None:
    require(shutil.which("unshare") is not None, "util-linux unshare missing")
    # Mapped to our own uid: the uid check alone would let it in.
    refusal, proc = _accept_from(["unshare", "--user", "--map-current-user"], tmp_path / "s")
    assert proc.wait(TIMEOUT) == 0
    assert refusal is not None and "another user namespace" in refusal

