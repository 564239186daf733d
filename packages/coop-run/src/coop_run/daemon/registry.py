"""The daemon's session table (SPEC 5): create, find, rediscover, and talk to supervisors.

A session is a supervisor process (``coop_run.session.supervisor``) that outlives the daemon; the
daemon only remembers where each one listens. The table is rebuilt at daemon start from
``sessions/*/supervisor.json`` plus a ``/proc/*/environ`` scan for ``COOP_SESSION``, and a
watcher per session (a task of the daemon's TaskGroup, on a pidfd of its supervisor)
notices when one ends. Attached terminals are handed to the supervisor with SCM_RIGHTS
(``adopt``), so the daemon is never on the path of terminal bytes. A workspace may have
several sessions (each its own name, directory and sandbox); a lookup by workspace takes
its most recent one.

Naming, lookup and entry shaping are pure functions; the registry does the I/O.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import os
import re
import socket
import time
import weakref
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coop_build.paths import CoopPaths, display_path
from coop_run.daemon.server import Connection, Daemon
from coop_run.daemon.zygote_client import ZygoteClient
from coop_run.errors import CoopError
from coop_run.ipc import protocol
from coop_run.ipc.client import Client
from coop_run.ipc.connection import request
from coop_run.ipc.framing import Message
from coop_run.ipc.schema import encode
from coop_run.layout import SessionDir, check_session_name
from coop_run.procs import alive, open_pidfd, proc_start_time
from coop_run.sandbox.config import SandboxConfig
from coop_run.session.config import SupervisorConfig
from coop_run.statefiles import read_json

logger = logging.getLogger(__name__)

SUPERVISOR_TIMEOUT = 5.0      # an ``info``/``restart``/``adopt`` round trip
KILL_EXTRA = 10.0             # a kill waits for the grace period plus this
MAX_NAME = 63
# How the registry starts its watchers: the daemon's ``start_task`` (its TaskGroup).
StartTask = Callable[[Coroutine[Any, Any, None]], asyncio.Task[None]]
_UNSAFE = re.compile(r"[^a-z0-9-]+")


# --- pure parts -------------------------------------------------------------------------


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


def image_env(entries: Iterable[str]) -> dict[str, str]:
    """A base image's config ``Env`` (``NAME=value`` strings) as a mapping."""
    out: dict[str, str] = {}
    for entry in entries:
        key, sep, value = entry.partition("=")
        if sep and key:
            out[key] = value
    return out


def cached_entry(session: Session) -> dict[str, Any]:
    """The ``ls`` entry of a session whose supervisor did not answer."""
    return {"name": session.name, "workspace": session.workspace, "pid": session.pid,
            "created": session.created, "state": "unreachable", "ptys": [],
            "web_clients": 0, "local_clients": 0, "tunnel_clients": 0}


# --- supervisor I/O ---------------------------------------------------------------------


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


async def supervisor_request(path: Path, message: Message, *, timeout: float = SUPERVISOR_TIMEOUT,
                             fds: list[int] | None = None) -> Message:
    """One command to a supervisor and its answer; ``OSError``/``TimeoutError`` if gone."""
    return await request(path, message, what="supervisor", timeout=timeout, fds=fds or ())


def _refused(reply: Message, default: str) -> CoopError:
    """A supervisor's ``{"ok": false, ...}`` as the error the daemon answers with."""
    return CoopError(str(reply.get("message", default)),
                     code=str(reply.get("error", protocol.INTERNAL_ERROR)))


def _unavailable(name: str, exc: BaseException) -> CoopError:
    return CoopError(f"session {name!r} is not answering ({type(exc).__name__}); "
                     "it may have just ended", code=protocol.SESSION_NOT_FOUND)


# --- the registry -----------------------------------------------------------------------


class SessionRegistry:
    """The daemon's ``Sessions``: every live session by name, found also by workspace."""

    def __init__(self, paths: CoopPaths) -> None:
        self.paths = paths
        self._sessions: dict[str, Session] = {}
        self._entries: dict[str, dict[str, Any]] = {}
        self.on_change: list[Any] = []  # callables, run when a session comes or goes
        self._start_task: StartTask | None = None  # the daemon's, while watchers run

    # Sessions protocol
    def list(self) -> list[dict[str, Any]]:
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
        if self._sessions.get(session.name) is session:
            session.watcher = None
            self.remove(session.name)

    # talking to supervisors
    async def refresh(self) -> builtins.list[dict[str, Any]]:
        """Every session's ``ls`` entry, asked of its supervisor (``info``) concurrently."""
        sessions = list(self._sessions.values())
        results = await asyncio.gather(*(self._info(s) for s in sessions))
        entries: builtins.list[dict[str, Any]] = []
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

    async def _info(self, session: Session) -> dict[str, Any] | None:
        try:
            reply = await supervisor_request(session.socket_path,
                                             encode(protocol.SupervisorInfo()))
        except (OSError, TimeoutError, CoopError) as exc:
            logger.info("session %s: info failed: %s", session.name, exc)
            return None
        entry = reply.get("session")
        return entry if reply.get("ok") is True and isinstance(entry, dict) else None

    async def command(self, session: Session, message: Message,
                      timeout: float = SUPERVISOR_TIMEOUT) -> Message:
        try:
            reply = await supervisor_request(session.socket_path, message, timeout=timeout)
        except (OSError, TimeoutError) as exc:
            raise _unavailable(session.name, exc) from exc
        if reply.get("ok") is not True:
            raise _refused(reply, "the supervisor refused")
        return reply

    async def adopt(self, session: Session, client: socket.socket,
                    request: protocol.SupervisorAttach | protocol.SupervisorShell) -> None:
        """Hand ``client`` (past its handshake) to the supervisor with ``request``."""
        try:
            reply = await supervisor_request(
                session.socket_path, encode(protocol.Adopt(request=encode(request))),
                fds=[client.fileno()])
        except (OSError, TimeoutError) as exc:
            raise _unavailable(session.name, exc) from exc
        if reply.get("ok") is not True:
            raise _refused(reply, "the supervisor refused the client")

    async def detach_clients(self) -> int:
        """Daemon shutdown: each supervisor detaches the clients this daemon handed it.

        The sessions and their other clients carry on; a supervisor that does not answer
        is skipped. Returns how many clients were detached.
        """
        async def one(session: Session) -> int:
            try:
                reply = await supervisor_request(session.socket_path,
                                                 encode(protocol.DetachClients()), timeout=2.0)
            except (OSError, TimeoutError, CoopError) as exc:
                logger.info("session %s: detach_clients failed: %s", session.name, exc)
                return 0
            count = reply.get("detached")
            return count if isinstance(count, int) and not isinstance(count, bool) else 0

        return sum(await asyncio.gather(*(one(s) for s in list(self._sessions.values()))))

    async def kill(self, session: Session, *, force: bool, grace: float) -> None:
        with contextlib.suppress(CoopError):
            await self.command(session, encode(protocol.SupervisorKill(force=force)),
                               timeout=grace + KILL_EXTRA)
        with contextlib.suppress(OSError):
            await process_exit(session.pid, session.start, timeout=5.0)
        self.remove(session.name)

    # rediscovery
    def rediscover(self) -> builtins.list[str]:
        """Find running supervisors (session dirs plus ``/proc``); the names found."""
        names = set(_state_dirs(self.paths.sessions)) | set(_proc_sessions())
        found: list[str] = []
        for name in sorted(names):
            if name in self._sessions:
                continue
            session = _probe(self.paths.sessions / name)
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


def _state_dirs(sessions: Path) -> list[str]:
    try:
        return [e.name for e in sessions.iterdir() if (e / "supervisor.json").exists()]
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


def _probe(session_dir: Path) -> Session | None:
    """A live supervisor in ``session_dir`` that answers ``info`` (blocking, short)."""
    sock_path = SessionDir(session_dir).supervisor_socket
    state = read_json(SessionDir(session_dir).supervisor_state) or {}
    try:
        with Client.connect(sock_path, timeout=2.0, request_timeout=2.0,
                            what="supervisor") as client:
            client.send({"cmd": "info"})
            reply = client.receive()
    except (OSError, CoopError, ValueError) as exc:
        logger.debug("no live supervisor in %s: %s", session_dir, exc)
        return None
    entry = reply.get("session")
    if reply.get("ok") is not True or not isinstance(entry, dict):
        return None
    pid = entry.get("pid")
    if not isinstance(pid, int):
        return None
    start = state.get("start") if state.get("pid") == pid else None
    if start is None:
        start = proc_start_time(pid)
    created = entry.get("created")
    return Session(name=str(entry.get("name", session_dir.name)),
                   workspace=os.path.realpath(str(entry.get("workspace", ""))),
                   pid=pid, start=start if isinstance(start, int) else None,
                   socket_path=sock_path,
                   created=created if isinstance(created, int) else None)


# --- the daemon's session commands ------------------------------------------------------


class SessionCommands:
    """``create``, ``attach``, ``shell``, ``kill``, ``restart`` and ``ls`` for a ``Daemon``.

    ``create`` runs the Coopfile work here (pydantic stays off the CLI) and has the
    zygote (``coop_run.session.zygote``) fork the supervisor. ``attach``/``shell`` mark the
    connection handed over: the daemon then closes its copy without answering, since the
    supervisor has answered the client itself.
    """

    def __init__(self, daemon: Daemon, registry: SessionRegistry,
                 environ: Mapping[str, str] | None = None) -> None:
        self.daemon = daemon
        self.registry = registry
        self.environ = dict(os.environ if environ is None else environ)
        registry.on_change.append(daemon.activity_changed)
        self.zygote = ZygoteClient(self.paths.logs / "daemon.log", self.environ)
        self._create_locks: weakref.WeakValueDictionary[str, asyncio.Lock] = (
            weakref.WeakValueDictionary())
        self._starting: dict[str, str] = {}  # name -> workspace, while its create runs

    def register(self) -> None:
        for name, handler in (("create", self.create), ("attach", self.attach),
                              ("shell", self.shell), ("kill", self.kill),
                              ("restart", self.restart), ("ls", self.ls)):
            self.daemon.register(name, handler)
        self.zygote.start()

    def close(self) -> None:
        """The daemon ends: its session starter goes too (sessions stay)."""
        self.zygote.close()

    async def ls(self, _conn: Connection, _command: protocol.Ls) -> Message:
        return encode(protocol.LsReply(await self.registry.refresh()))

    async def create(self, _conn: Connection, command: protocol.Create) -> Message:
        started = time.monotonic()  # the log line's time: request to agent running
        given = Path(command.workspace)
        workspace = os.path.realpath(given)
        if not given.is_absolute() or not Path(workspace).is_dir():
            raise CoopError(f"workspace {command.workspace!r} is not an absolute "
                            "path to a directory", code=protocol.INVALID_COMMAND)
        global_path = self._global_path(command.config)
        wanted = command.name
        if wanted is not None:
            try:
                check_session_name(wanted)
            except CoopError as exc:
                raise CoopError(exc.message, code=protocol.INVALID_COMMAND) from exc
        client_env = command.env or {}
        cols = 80 if command.cols is None else command.cols
        rows = 24 if command.rows is None else command.rows
        protocol.check_window(cols, rows)
        async with self._creating(workspace):
            # Names being started count as taken: two creates never share a session dir.
            taken = {**self.registry.taken(), **self._starting}
            if wanted is not None:  # a new name starts another session in the workspace
                owner = taken.get(wanted)
                if owner == workspace:
                    return encode(protocol.CreateReply(name=wanted, created=False, warnings=[]))
                if owner is not None:
                    raise CoopError(f"session {wanted!r} already exists for "
                                    f"{display_path(owner, self.environ)}",
                                    code=protocol.SESSION_EXISTS)
                name = wanted
            else:  # no name: the workspace's session, the most recent of several
                existing = self.registry.by_workspace(workspace)
                if existing is not None:
                    return encode(protocol.CreateReply(name=existing.name, created=False,
                                                       warnings=[]))
                name = pick_name(safe_name(Path(workspace).name), taken, workspace)
            self._starting[name] = workspace
            try:
                config, network, warnings = self._config(
                    name, Path(workspace), client_env, command.overrides, (cols, rows),
                    global_path=global_path)
                handle = await self.zygote.launch(config, network=network,
                                                  coop_home=self.paths.home)
                session = Session(name=name, workspace=workspace, pid=handle.pid,
                                  start=proc_start_time(handle.pid),
                                  socket_path=handle.socket_path, created=int(time.time()))
                self.registry.add(session)
            finally:
                del self._starting[name]
        logger.info("session %s created for %s in %.1f ms (supervisor %d)", name, workspace,
                    (time.monotonic() - started) * 1000, handle.pid)
        return encode(protocol.CreateReply(name=name, created=True, warnings=warnings))

    @contextlib.asynccontextmanager
    async def _creating(self, workspace: str) -> AsyncIterator[None]:
        """One create at a time per workspace: a second ``coop`` there waits for the
        first, then attaches to its session instead of starting another."""
        lock = self._create_locks.get(workspace)
        if lock is None:
            lock = self._create_locks[workspace] = asyncio.Lock()
        async with lock:  # the entry goes with the last holder or waiter (weak values)
            yield

    def _config(self, name: str, workspace: Path, client_env: Mapping[str, str],
                overrides: Mapping[str, Any] | None, size: tuple[int, int], *,
                global_path: Path | None = None) -> tuple[Any, str, builtins.list[str]]:
        """The supervisor's config from the workspace's Coopfile and build, its network
        mode (made in the supervisor) and warnings.

        ``global_path`` is the client's global layer (``--config``, else its default);
        without one, the daemon's own default.
        """
        from coop_build import quickcheck
        from coop_build.errors import CoopBuildError
        from coop_build.layers import expand_env, load_coopfile
        from coop_build.paths import global_config_path
        from coop_build.store import Store

        # The Coopfile sees the client's variables (only those it references) over ours.
        environ = {**self.environ, **client_env}
        if global_path is None:
            global_path = global_config_path(dict(self.environ))
        try:
            loaded = load_coopfile(workspace=workspace, global_path=global_path,
                                   overrides=overrides, environ=environ)
            store = Store(self.paths)
            record = store.workspace_build(workspace)
            if record is None:
                raise CoopError(f"no rootfs built for {display_path(workspace, self.environ)}: "
                                "run coop init there first", code=protocol.ROOTFS_NOT_BUILT)
            warnings: builtins.list[str] = []
            current = quickcheck.check(self.paths, workspace, global_path=global_path,
                                       overrides=overrides, environ=environ)
            if current is None:
                warnings.append("the Coopfile changed since the last build; "
                                "run coop init to rebuild (using the old rootfs)")
            layers = store.lower_dirs(record)
        except CoopBuildError as exc:
            raise CoopError(exc.message, code=exc.code) from exc
        coopfile = loaded.coopfile
        env = image_env(record.env)
        env.update(expand_env(coopfile.env, environ))  # secrets: never logged
        mount = (workspace / coopfile.workspace.mount).resolve()
        sandbox = SandboxConfig(
            name=name, layers=list(layers), session_dir=self.paths.sessions / name,
            workspace=mount, workspace_inside=coopfile.workspace.path,
            host_image=record.host, persist=list(coopfile.session.persist), env=env,
            user_home=Path(self.environ.get("HOME", "/")),
        )
        config = SupervisorConfig(  # noqa: S604 - "shell" is the session's shell argv
            sandbox=sandbox, agent=[coopfile.agent.command, *coopfile.agent.args],
            shell=(coopfile.session.shell,), auto_restart=coopfile.session.auto_restart,
            restart_delay_ms=coopfile.session.restart_delay_ms, cols=size[0], rows=size[1],
            log_file=self.paths.logs / "sessions" / f"{name}.log",
        )
        return config, coopfile.network.mode, warnings

    @property
    def paths(self) -> CoopPaths:
        return self.registry.paths

    @staticmethod
    def _global_path(value: str | None) -> Path | None:
        """``create``'s ``config``: the global layer as an absolute path (the daemon's
        working directory is not the client's); ``None``: the daemon's default."""
        if value is None:
            return None
        if "\0" in value or not value.startswith("/"):
            shown = value if len(value) <= 60 else value[:60] + "..."
            raise CoopError(f"create: config {shown!r} is not an absolute path",
                            code=protocol.INVALID_COMMAND)
        return Path(value)

    async def attach(self, conn: Connection, command: protocol.Attach) -> Message:
        session = self.registry.find(command.session)
        return await self._hand_over(conn, session, protocol.SupervisorAttach(
            pty=0 if command.pty is None else command.pty, cols=command.cols,
            rows=command.rows, offset=command.offset))

    async def shell(self, conn: Connection, command: protocol.Shell) -> Message:
        session = self.registry.find(command.session)
        return await self._hand_over(conn, session, protocol.SupervisorShell(
            command=command.command, cols=command.cols, rows=command.rows))

    async def _hand_over(self, conn: Connection, session: Session,
                         request: protocol.SupervisorAttach | protocol.SupervisorShell,
                         ) -> Message:
        # From here on the client's bytes are the supervisor's: nothing reads them here.
        await self.registry.adopt(session, conn.sock, request)
        conn.handed_over = True
        logger.info("pid %d: %s of session %s handed to its supervisor", conn.peer_pid,
                    request.TAG, session.name)
        return protocol.ok()

    async def kill(self, _conn: Connection, command: protocol.Kill) -> Message:
        force = bool(command.force)
        targets = (list(self.registry) if command.all
                   else [self.registry.find(command.session, unique=True)])
        await asyncio.gather(*(self.registry.kill(s, force=force, grace=5.0) for s in targets))
        for session in targets:
            logger.info("session %s killed%s", session.name, " (forced)" if force else "")
        return encode(protocol.KillReply(killed=[s.name for s in targets]))

    async def restart(self, _conn: Connection, command: protocol.Restart) -> Message:
        session = self.registry.find(command.session, unique=True)
        await self.registry.command(session, encode(protocol.SupervisorRestart()))
        return encode(protocol.RestartReply(name=session.name))
