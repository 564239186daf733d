"""Attention through the real ``coop`` (SPEC 13): a person's terminal rings a bell or
sends a notification in the session; every client (one handed over by the daemon, one
that came straight to the supervisor, as the web server does) gets the ``attention``
event, ``coop ls --json`` shows the mark per PTY, and typing clears it everywhere.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from local_terminal import terminal
from session_support import Coop, ls_json
from supervisor_client import Stream

pytestmark = pytest.mark.asuser

TIMEOUT = 20.0


def marks(stream: Stream) -> list[dict[str, Any]]:
    return [e for e in stream.events if e.get("event") == "attention"]


def agent_mark(coop: Coop, cwd: Path) -> Any:
    (entry,) = ls_json(coop, cwd)
    return entry["ptys"][0]["attention"]


def test_bell_and_notification_reach_every_client_and_ls(coop: Coop,
                                                       host_workspace: Path) -> None:
    assert coop("-d", cwd=host_workspace).returncode == 0
    sessions = coop.coop_home / "sessions" / "proj" / "supervisor.sock"
    handed = Stream.open(coop.coop_home / "sock", "attach", session="proj", cols=80, rows=24)
    direct = Stream.open(sessions, "attach", kind="web", cols=80, rows=24)
    with handed.sock, direct.sock, terminal(coop, ["attach"], host_workspace) as term:
        assert agent_mark(coop, host_workspace) is None
        term.type(b"printf '\\007'; echo rang-$((40+2))\r")
        term.read_until(b"\x07rang-42")  # the person's own terminal rings
        bell = {"event": "attention", "pty": 0, "active": True, "reason": "bell"}
        for client in (handed, direct):
            client.wait(lambda c=client: marks(c) == [bell], "the bell's event", TIMEOUT)
        mark = agent_mark(coop, host_workspace)
        assert mark["reason"] == "bell" and abs(mark["since"] - time.time()) < 60

        # Typing clears it, for every client and in ls; then a notification with a text.
        term.type(b"printf '\\033]777;notify;Agent;needs you\\033\\\\'; echo n-$((40+2))\r")
        term.read_until(b"n-42")
        cleared = {"event": "attention", "pty": 0, "active": False}
        note = {"event": "attention", "pty": 0, "active": True, "reason": "notification",
                "text": "Agent: needs you"}
        for client in (handed, direct):
            client.wait(lambda c=client: marks(c) == [bell, cleared, note],
                        "the clear, then the notification", TIMEOUT)
        assert agent_mark(coop, host_workspace)["text"] == "Agent: needs you"

        term.type(b"\x15")  # Ctrl+U: a key
        for client in (handed, direct):
            client.wait(lambda c=client: marks(c)[-1] == cleared, "the clear", TIMEOUT)
        assert agent_mark(coop, host_workspace) is None
