"""The daemon's side of a supervisor: what it knows of one (``Session``), its ``ls`` entry
while it does not answer, the error when it is gone, and waiting for its process to end on
a pidfd. ``registry.SessionRegistry.command`` is the one way to talk to it.

A session is a supervisor process (``coop_run.session.supervisor``) that outlives the
daemon; the daemon only remembers where each one listens and talks to it with the same
framed connection and handshake as its own clients (``ipc.connection``).
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field
from pathlib import Path

from coop_run.errors import CoopError
from coop_run.ipc import protocol
from coop_run.procs import open_pidfd

SUPERVISOR_TIMEOUT = 5.0      # an ``info``/``restart``/``adopt`` round trip


@dataclass
class Session:
    """What the daemon knows of one session: where its supervisor listens."""

    name: str
    workspace: str            # real path
    pid: int
    start: int | None         # the supervisor's /proc start time (pid reuse guard)
    socket_path: Path
    created: int | None
    watcher: asyncio.Task[None] | None = field(default=None, repr=False)


def cached_entry(session: Session) -> protocol.SessionEntry:
    """The ``ls`` entry of a session whose supervisor did not answer."""
    return protocol.SessionEntry(name=session.name, workspace=session.workspace,
                                 pid=session.pid, created=session.created,
                                 state="unreachable", ptys=[], web_clients=0, local_clients=0,
                                 tunnel_clients=0)



def unavailable(name: str, exc: BaseException) -> CoopError:
    return CoopError(f"session {name!r} is not answering ({type(exc).__name__}); "
                     "it may have just ended", code=protocol.SESSION_NOT_FOUND)


async def process_exit(pid: int, start: int | None, *, timeout: float | None = None) -> bool:
    """Wait until the process recorded as (pid, start time) has ended: True, or False at
    ``timeout`` seconds. A pidfd read by the loop, so nothing polls."""
    pidfd = open_pidfd(pid, start)
    if pidfd is None:
        return True
    loop = asyncio.get_running_loop()
    ended: asyncio.Future[None] = loop.create_future()

    def readable() -> None:
        if not ended.done():
            ended.set_result(None)

    loop.add_reader(pidfd, readable)
    try:
        async with asyncio.timeout(timeout):
            await ended
    except TimeoutError:
        return False
    finally:
        loop.remove_reader(pidfd)
        os.close(pidfd)
    return True
