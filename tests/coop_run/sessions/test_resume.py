"""Resume from a byte offset (SPEC 6): a client that reconnects through the daemon gets
exactly the bytes it missed, as they were, and nothing it already had."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from session_support import Coop
from supervisor_client import Stream

TIMEOUT = 20.0


def attach(sock: Path, **fields: Any) -> Stream:
    """A raw stream-mode client of the daemon socket (what the web UI or tunnel does)."""
    return Stream.open(sock, "attach", session="proj", cols=80, rows=24, **fields)


def test_a_reconnecting_client_gets_exactly_what_it_missed(coop: Coop,
                                                         host_workspace: Path) -> None:
    assert coop("-d", cwd=host_workspace).returncode == 0
    sock = coop.coop_home / "sock"
    first = attach(sock)
    first.type(b"echo one-$((1+1))\r")
    first.wait_output(b"one-2", TIMEOUT)
    left_at = first.offset
    first.close()  # the phone went to sleep

    other = attach(sock)
    other.type(b"echo two-$((2+1))\r")
    other.wait_output(b"two-3", TIMEOUT)
    assert other.start <= left_at
    seen = bytes(other.output[left_at - other.start:])
    other.close()
    assert b"two-3" in seen and b"one-2" not in seen

    back = attach(sock, offset=left_at)
    try:
        assert back.start == left_at
        back.wait_output(b"two-3", TIMEOUT)
        assert bytes(back.output[:len(seen)]) == seen  # the same bytes, none twice
    finally:
        back.close()
