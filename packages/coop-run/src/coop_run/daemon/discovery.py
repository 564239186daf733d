"""Finding running sessions when a daemon starts: every ``sessions/*/supervisor.json``
plus a ``/proc/*/environ`` scan for ``COOP_SESSION`` (a sandbox whose record is lost),
each confirmed by its supervisor answering ``info`` (blocking and short: the daemon does
this before it serves).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from coop_run.daemon.supervisors import Session
from coop_run.errors import CoopError
from coop_run.ipc import protocol
from coop_run.ipc.client import Client
from coop_run.ipc.schema import encode
from coop_run.layout import SessionDir
from coop_run.procs import proc_start_time
from coop_run.statefiles import read_json

logger = logging.getLogger(__name__)


def candidates(sessions: Path) -> list[str]:
    """Names of sessions that may be running: recorded ones and ones seen in ``/proc``."""
    return sorted(set(_state_dirs(sessions)) | set(_proc_sessions()))


def _state_dirs(sessions: Path) -> list[str]:
    try:
        return [e.name for e in sessions.iterdir() if SessionDir(e).supervisor_state.exists()]
    except OSError:
        return []


def _proc_sessions() -> list[str]:
    """``COOP_SESSION`` values of our user's processes (sandboxes whose state file is lost)."""
    uid = os.getuid()
    names: set[str] = set()
    try:
        entries = [p for p in Path("/proc").iterdir() if p.name.isdigit()]
    except OSError:
        return []
    for entry in entries:
        try:
            if entry.stat().st_uid != uid:
                continue
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        for item in environ.split(b"\0"):
            if item.startswith(b"COOP_SESSION="):
                value = item[len(b"COOP_SESSION="):].decode(errors="replace")
                if value and "/" not in value and value not in (".", ".."):
                    names.add(value)
    return sorted(names)


def probe(session_dir: Path) -> Session | None:
    """A live supervisor in ``session_dir`` that answers ``info`` (blocking, short)."""
    sock_path = SessionDir(session_dir).supervisor_socket
    state = read_json(SessionDir(session_dir).supervisor_state) or {}
    try:
        with Client.connect(sock_path, timeout=2.0, request_timeout=2.0,
                            what="supervisor") as client:
            client.send(encode(protocol.SupervisorInfo()))
            entry = protocol.decode_reply(protocol.InfoReply, client.receive()).session
    except (OSError, CoopError, ValueError) as exc:
        logger.debug("no live supervisor in %s: %s", session_dir, exc)
        return None
    start = state.get("start") if state.get("pid") == entry.pid else None
    if start is None:
        start = proc_start_time(entry.pid)
    return Session(name=entry.name, workspace=os.path.realpath(entry.workspace),
                   pid=entry.pid, start=start if isinstance(start, int) else None,
                   socket_path=sock_path, created=entry.created)
