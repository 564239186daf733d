"""The daemon's session table (SPEC 5): create, find, rediscover, and talk to supervisors.

A session is a supervisor process (``coop_run.session.supervisor``) that outlives the daemon; the
daemon only remembers where each one listens. The table is rebuilt at daemon start from
``sessions/*/supervisor.json`` plus a ``/proc/*/environ`` scan for ``COOP_SESSION``, and a
watcher per session (a task of the daemon's TaskGroup, on a pidfd of its supervisor)
notices when one ends. Attached terminals are handed to the supervisor with SCM_RIGHTS
(``adopt``), so the daemon is never on the path of terminal bytes. A workspace may have
several sessions (each its own name, directory and sandbox); a lookup by workspace takes
its most recent one.

Naming and lookup are pure functions; the registry does the I/O, through the daemon's
side of the supervisors (``supervisors``) and, at start, ``discovery``. Its commands for
clients are ``commands``.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import os
import re
import socket
from collections.abc import Callable, Coroutine, Iterable, Mapping
from typing import Any, TypeVar

from coop_build.paths import CoopPaths, display_path
from coop_run.daemon.discovery import candidates, probe
from coop_run.daemon.supervisors import (
    SUPERVISOR_TIMEOUT,
    Session,
    cached_entry,
    process_exit,
    unavailable,
)
from coop_run.errors import CoopError
from coop_run.ipc import protocol
from coop_run.ipc.connection import request
from coop_run.ipc.schema import encode
from coop_run.procs import alive

logger = logging.getLogger(__name__)

KILL_EXTRA = 10.0             # a kill waits for the grace period plus this
MAX_NAME = 63
# How the registry starts its watchers: the daemon's ``start_task`` (its TaskGroup).
RP = TypeVar("RP", bound=protocol.Reply)
StartTask = Callable[[Coroutine[Any, Any, None]], asyncio.Task[None]]
_UNSAFE = re.compile(r"[^a-z0-9-]+")


# --- naming and lookup (pure) -------------------------------------------------------------


def safe_name(basename: str) -> str:
    """A workspace basename made hostname- and path-safe: ``My Project!`` -> ``my-project``."""
    name = _UNSAFE.sub("-", basename.lower()).strip("-")
    name = name[:MAX_NAME].rstrip("-")
    return name or "session"


def pick_name(wanted: str, taken: Mapping[str, str], workspace: str) -> str:
    """``wanted``, or ``wanted-2``, ``-3`` ... when another workspace holds the name.

    ``taken`` maps live session names to their workspace real paths.
    """
    candidate = wanted
    n = 1
    while candidate in taken and taken[candidate] != workspace:
        n += 1
        suffix = f"-{n}"
        candidate = wanted[: MAX_NAME - len(suffix)] + suffix
    return candidate


def most_recent(sessions: Iterable[Session]) -> Session | None:
    """The session created last: by creation time, then the supervisor's start time,
    then the order given (the later of two equals)."""
    best: Session | None = None
    for session in sessions:
        if best is None or _recency(session) >= _recency(best):
            best = session
    return best


def _recency(session: Session) -> tuple[int, int]:
    return session.created or 0, session.start or 0


# --- the registry -----------------------------------------------------------------------


class SessionRegistry:
    """The daemon's ``Sessions``: every live session by name, found also by workspace."""

    def __init__(self, paths: CoopPaths) -> None:
        self.paths = paths
        self._sessions: dict[str, Session] = {}
        self._entries: dict[str, protocol.SessionEntry] = {}
        self.on_change: list[Any] = []  # callables, run when a session comes or goes
        self._start_task: StartTask | None = None  # the daemon's, while watchers run

    # Sessions protocol
    def list(self) -> list[protocol.SessionEntry]:
        return [self._entries.get(s.name) or cached_entry(s) for s in self._sessions.values()]

    def __len__(self) -> int:
        return len(self._sessions)

    def __iter__(self) -> Any:
        return iter(list(self._sessions.values()))

    # lookup
    def get(self, name: str) -> Session | None:
        return self._sessions.get(name)

    def in_workspace(self, workspace: str) -> builtins.list[Session]:
        """The sessions of ``workspace`` (two agents on one repository: several)."""
        real = os.path.realpath(workspace)
        return [s for s in self._sessions.values() if s.workspace == real]

    def by_workspace(self, workspace: str) -> Session | None:
        """The workspace's most recent session: the one ``coop`` there attaches to."""
        return most_recent(self.in_workspace(workspace))

    def find(self, key: str | None, default_workspace: str | None = None, *,
             unique: bool = False) -> Session:
        """By name, else by workspace path (its most recent session); ``SESSION_NOT_FOUND``
        otherwise. ``unique`` (kill, restart): a workspace path that has several sessions
        is refused, since acting on the wrong agent cannot be undone."""
        if key:
            session = self._sessions.get(key)
            if session is None and key.startswith("/"):
                session = self._of_workspace(key, unique=unique)
            if session is None:
                raise CoopError(f"no session {key!r} (see coop ls)",
                                code=protocol.SESSION_NOT_FOUND)
            return session
        if default_workspace:
            session = self._of_workspace(default_workspace, unique=unique)
            if session is not None:
                return session
            shown = display_path(default_workspace)
            raise CoopError(f"no session for {shown} (run coop to start one)",
                            code=protocol.SESSION_NOT_FOUND)
        raise CoopError("no session given", code=protocol.SESSION_NOT_FOUND)

    def _of_workspace(self, workspace: str, *, unique: bool) -> Session | None:
        sessions = self.in_workspace(workspace)
        if unique and len(sessions) > 1:
            names = ", ".join(sorted(s.name for s in sessions))
            raise CoopError(f"{display_path(workspace)} has {len(sessions)} sessions "
                            f"({names}): name the one you mean", code=protocol.INVALID_COMMAND)
        return most_recent(sessions)

    def taken(self) -> dict[str, str]:
        return {s.name: s.workspace for s in self._sessions.values()}

    # membership
    def add(self, session: Session) -> None:
        self._sessions[session.name] = session
        self._watch(session)
        self._changed()

    def remove(self, name: str) -> None:
        session = self._sessions.pop(name, None)
        self._entries.pop(name, None)
        if session is not None:
            if session.watcher is not None and session.watcher is not _current_task():
                session.watcher.cancel()
            logger.info("session %s is gone", name)
            self._changed()

    def _changed(self) -> None:
        for callback in self.on_change:
            callback()

    def start_watchers(self, start_task: StartTask) -> None:
        """Watch every session, now and as they come, in tasks ``start_task`` runs (the
        daemon's ``Daemon.start_task``: they belong to its TaskGroup)."""
        self._start_task = start_task
        for session in self._sessions.values():
            self._watch(session)

    def stop_watchers(self) -> None:
        self._start_task = None
        for session in self._sessions.values():
            if session.watcher is not None:
                session.watcher.cancel()
                session.watcher = None

    def _watch(self, session: Session) -> None:
        if self._start_task is not None and session.watcher is None:
            session.watcher = self._start_task(self._watcher(session))

    async def _watcher(self, session: Session) -> None:
        """Wait for the supervisor's process to end, then drop the session."""
        try:
            await process_exit(session.pid, session.start)
        except OSError as exc:  # no pidfd: the next ``ls`` checks the pid instead
            logger.warning("session %s: cannot watch pid %d: %s", session.name, session.pid,
                           exc)
            return
        except Exception:  # a watcher is a task of the daemon's group: never end the daemon
            logger.exception("session %s: its watcher failed", session.name)
            return
        if self._sessions.get(session.name) is session:
            session.watcher = None
            self.remove(session.name)

    # talking to supervisors
    async def refresh(self) -> builtins.list[protocol.SessionEntry]:
        """Every session's ``ls`` entry, asked of its supervisor (``info``) concurrently."""
        sessions = list(self._sessions.values())
        results = await asyncio.gather(*(self._info(s) for s in sessions))
        entries: builtins.list[protocol.SessionEntry] = []
        for session, answer in zip(sessions, results, strict=True):
            if answer is None:
                if not alive(session.pid, session.start):
                    self.remove(session.name)
                    continue
                entries.append(cached_entry(session))
            else:
                self._entries[session.name] = answer
                entries.append(answer)
        return entries

    async def _info(self, session: Session) -> protocol.SessionEntry | None:
        try:
            return (await self.command(session, protocol.SupervisorInfo(),
                                       protocol.InfoReply)).session
        except CoopError as exc:
            logger.info("session %s: info failed: %s", session.name, exc)
            return None

    async def command(self, session: Session, message: protocol.Request,
                      answer: type[RP], *, timeout: float = SUPERVISOR_TIMEOUT,
                      fds: builtins.list[int] | None = None) -> RP:
        """``message`` to the session's supervisor and its answer as ``answer``; its
        refusal (with the supervisor's code) or its absence as a ``CoopError``."""
        try:
            reply = await request(session.socket_path, encode(message), what="supervisor",
                                  timeout=timeout, fds=fds or ())
        except (OSError, TimeoutError) as exc:
            raise unavailable(session.name, exc) from exc
        return protocol.decode_reply(answer, reply)

    async def adopt(self, session: Session, client: socket.socket,
                    request: protocol.SupervisorAttach | protocol.SupervisorShell) -> None:
        """Hand ``client`` (past its handshake) to the supervisor with ``request``."""
        await self.command(session, protocol.Adopt(request=encode(request)), protocol.Ok,
                           fds=[client.fileno()])

    async def detach_clients(self) -> int:
        """Daemon shutdown: each supervisor detaches the clients this daemon handed it.

        The sessions and their other clients carry on; a supervisor that does not answer
        is skipped. Returns how many clients were detached.
        """
        async def one(session: Session) -> int:
            try:
                return (await self.command(session, protocol.DetachClients(),
                                           protocol.DetachedReply, timeout=2.0)).detached
            except CoopError as exc:
                logger.info("session %s: detach_clients failed: %s", session.name, exc)
                return 0

        return sum(await asyncio.gather(*(one(s) for s in list(self._sessions.values()))))

    async def kill(self, session: Session, *, force: bool, grace: float) -> None:
        with contextlib.suppress(CoopError):
            await self.command(session, protocol.SupervisorKill(force=force), protocol.Ok,
                               timeout=grace + KILL_EXTRA)
        with contextlib.suppress(OSError):
            await process_exit(session.pid, session.start, timeout=5.0)
        self.remove(session.name)

    # rediscovery
    def rediscover(self) -> builtins.list[str]:
        """Find running supervisors (session dirs plus ``/proc``); the names found."""
        found: list[str] = []
        for name in candidates(self.paths.sessions):
            if name in self._sessions:
                continue
            session = probe(self.paths.sessions / name)
            if session is not None:
                self._sessions[name] = session
                found.append(name)
        if found:
            logger.info("rediscovered sessions: %s", ", ".join(found))
        return found


def _current_task() -> asyncio.Task[Any] | None:
    try:
        return asyncio.current_task()
    except RuntimeError:
        return None
