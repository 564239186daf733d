"""Every session's ``ls`` entry kept current, for clients that are told of changes rather
than asking (the web UI's event stream; the tunnel's later).

While it runs, the feed holds one ``watch`` connection per supervisor (the supervisor sends
its entry at once and again whenever it changes: a PTY's state or attention, its clients,
a new shell) and follows the registry as sessions come and go. Listeners wait for the
version to move (``changed``) and read ``list()``: one list for everybody, never polled.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging

from coop_run.daemon.registry import SessionRegistry, StartTask
from coop_run.daemon.supervisors import Session, cached_entry
from coop_run.errors import ProtocolError
from coop_run.ipc import protocol
from coop_run.ipc.connection import FramedConnection
from coop_run.ipc.framing import Message
from coop_run.ipc.schema import decode, encode

logger = logging.getLogger(__name__)


class SessionFeed:
    """Live ``ls`` entries of the registry's sessions, and a version that moves with them."""

    def __init__(self, registry: SessionRegistry, start_task: StartTask) -> None:
        self.registry = registry
        self._start_task = start_task
        self._entries: dict[str, protocol.SessionEntry] = {}
        self._watches: dict[str, asyncio.Task[None]] = {}
        self._changed = asyncio.Event()
        self.version = 0
        self.running = False

    def start(self) -> None:
        if not self.running:
            self.running = True
            self.registry.on_change.append(self._sync)
            self._sync()

    def stop(self) -> None:
        if not self.running:
            return
        self.running = False
        with contextlib.suppress(ValueError):
            self.registry.on_change.remove(self._sync)
        for task in self._watches.values():
            task.cancel()
        self._watches.clear()
        self._entries.clear()

    def list(self) -> builtins.list[protocol.SessionEntry]:
        """Every session's entry: as its supervisor last sent it, else as known."""
        return [self._entries.get(s.name) or cached_entry(s) for s in self.registry]

    async def changed(self, version: int) -> int:
        """Wait until the version is no longer ``version``; the new one."""
        while self.version == version:
            event = self._changed
            await event.wait()
        return self.version

    def _bump(self) -> None:
        self.version += 1
        self._changed.set()
        self._changed = asyncio.Event()

    def _sync(self) -> None:
        """Watch the sessions the registry has, forget the ones it dropped."""
        names = {s.name for s in self.registry}
        for name in [n for n in self._watches if n not in names]:
            self._watches.pop(name).cancel()
            self._entries.pop(name, None)
        for session in self.registry:
            if session.name not in self._watches:
                self._watches[session.name] = self._start_task(self._watch(session))
        self._bump()

    async def _watch(self, session: Session) -> None:
        try:
            conn = await FramedConnection.connect(session.socket_path, what="supervisor")
        except (OSError, TimeoutError, ProtocolError) as exc:
            logger.info("session %s: cannot watch it: %s", session.name, exc)
            return
        try:
            await conn.send(encode(protocol.Watch()))
            while (message := await conn.receive()) is not None:
                entry = _entry(message)
                if self._watches.get(session.name) is not asyncio.current_task():
                    return
                self._entries[session.name] = entry
                self._bump()
        except (OSError, ProtocolError) as exc:
            logger.info("session %s: its watch ended: %s", session.name, exc)
        finally:
            conn.close()


def _entry(message: Message) -> protocol.SessionEntry:
    if message.get("event") != protocol.SessionChanged.TAG:
        raise ProtocolError(f"unexpected {str(message)[:80]}")
    return decode(protocol.SessionChanged, message).session
