"""The coop daemon (SPEC 5, 6): one per user, on ``~/.coop/sock``, started on demand.

``python -m coop_run.daemon.main --detach`` is what ``autospawn.ensure_daemon`` runs. The daemon
binds the socket safely, writes ``daemon.pid``, then serves each connection in its own
task: uid check, handshake, commands. A broken client (garbage, oversize, unknown command,
wrong version) gets its error code and, where the stream cannot be trusted, is hung up on;
nobody else notices. It exits on ``SIGTERM``, on ``shutdown``, or after ``IDLE_SECONDS``
with no session, client, web server or tunnel. Every task belongs to one TaskGroup.

Sessions plug in through the ``Sessions`` protocol and ``Daemon.register()``: ``main``
rediscovers running sessions (``coop_run.daemon.registry``) before binding, then serves their
commands.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from coop_build.paths import CoopPaths
from coop_run.errors import CoopError, FrameTooLargeError, ProtocolError
from coop_run.ipc import protocol
from coop_run.ipc.connection import FramedConnection
from coop_run.ipc.framing import Message
from coop_run.ipc.schema import encode
from coop_run.ipc.sockets import bind_unix_socket, is_listening, peer_credentials, peer_refusal
from coop_run.layout import RunLayout
from coop_run.statefiles import write_text_atomic

# Named explicitly: under ``python -m`` __name__ is "__main__".
log = logging.getLogger("coop_run.daemon.server")

IDLE_SECONDS = 30.0
# Tests shorten the idle exit with this variable (seconds, a positive number).
IDLE_ENV = "COOP_DAEMON_IDLE_SECONDS"
HANDSHAKE_TIMEOUT = 10.0


class Sessions(Protocol):
    """The session table the daemon serves (``daemon.registry.SessionRegistry``)."""

    def list(self) -> list[protocol.SessionEntry]:
        """One ``ls`` entry per session (SPEC 6)."""
        ...

    def __len__(self) -> int: ...


class NoSessions:
    """The empty table: what the daemon has before sessions exist."""

    def list(self) -> list[protocol.SessionEntry]:
        return []

    def __len__(self) -> int:
        return 0


@dataclass(frozen=True)
class Activity:
    """What keeps the daemon alive."""

    sessions: int
    clients: int
    web_server: bool
    tunnels: int

    @property
    def idle(self) -> bool:
        return not (self.sessions or self.clients or self.web_server or self.tunnels)


def idle_timeout(environ: Mapping[str, str]) -> float:
    """``$COOP_DAEMON_IDLE_SECONDS`` if it is a positive number, else ``IDLE_SECONDS``."""
    raw = environ.get(IDLE_ENV, "").strip()
    if not raw:
        return IDLE_SECONDS
    try:
        value = float(raw)
    except ValueError:
        log.warning("ignoring %s: not a number", IDLE_ENV)
        return IDLE_SECONDS
    if not value > 0 or value == float("inf"):
        log.warning("ignoring %s: must be a positive number", IDLE_ENV)
        return IDLE_SECONDS
    return value


def should_exit_idle(activity: Activity, idle_since: float | None, now: float,
                     timeout: float) -> bool:
    """Whether the daemon has been idle for ``timeout`` seconds by ``now``."""
    return activity.idle and idle_since is not None and now - idle_since >= timeout


class Connection(FramedConnection):
    """One client of the daemon: a framed connection that a handler may hand over."""

    def __init__(self, sock: socket.socket, peer_pid: int) -> None:
        super().__init__(sock, peer_pid=peer_pid)
        # Set by a handler that passed the socket on (attach/shell go to the supervisor):
        # the daemon then sends nothing more and closes its copy.
        self.handed_over = False


# A handler takes the connection that asked (None: the web server's REST API, which has
# no socket to hand over or keep) and the request of its command (``protocol.COMMANDS``).
Handler = Callable[[Connection | None, Any], Awaitable[Message]]


class Daemon:
    """The asyncio daemon; ``await Daemon(...).run()`` serves until shutdown."""

    def __init__(self, paths: CoopPaths, socket_path: Path, *,
                 sessions: Sessions | None = None, idle_seconds: float = IDLE_SECONDS) -> None:
        self.paths = paths
        self.socket_path = socket_path
        self.pid_file = RunLayout(paths).daemon_pid
        self.sessions: Sessions = sessions if sessions is not None else NoSessions()
        self.idle_seconds = idle_seconds
        self.web_server = False
        self.tunnels = 0
        self.started = time.monotonic()
        self.connections: set[Connection] = set()
        self._handlers: dict[str, Handler] = {
            "ls": self._ls, "status": self._status, "shutdown": self._shutdown,
        }
        self._stopping = asyncio.Event()
        self._changed = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._group: asyncio.TaskGroup | None = None
        self._socket_id: tuple[int, int] | None = None
        self._starters: list[Callable[[], None]] = []
        self._closers: list[Callable[[], Awaitable[None]]] = []

    # --- extension points ---------------------------------------------------------------

    def register(self, command: str, handler: Handler) -> None:
        """Serve ``command`` (one of ``protocol.COMMANDS``) with ``handler``."""
        if command not in protocol.COMMANDS:
            raise ValueError(f"unknown command {command!r}")
        self._handlers[command] = handler

    def on_start(self, starter: Callable[[], None]) -> None:
        """Call ``starter`` once the daemon serves, when ``start_task`` works (watchers)."""
        self._starters.append(starter)

    def on_shutdown(self, closer: Callable[[], Awaitable[None]]) -> None:
        """Run ``closer`` at shutdown, before clients are detached (web server, tunnels)."""
        self._closers.append(closer)

    def start_task(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run ``coro`` as a task of the daemon's TaskGroup (while it serves): cancelled at
        shutdown after the closers, and awaited before ``run()`` returns."""
        if self._group is None:
            coro.close()
            raise RuntimeError("the daemon is not serving")
        task = self._group.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def activity_changed(self) -> None:
        """Call when sessions, the web server or tunnels come or go (idle accounting)."""
        self._changed.set()

    def activity(self) -> Activity:
        return Activity(len(self.sessions), len(self.connections), self.web_server,
                        self.tunnels)

    def request_shutdown(self, reason: str | None = None) -> None:
        if not self._stopping.is_set():
            log.info("shutting down: %s", reason or "requested")
            self._stopping.set()

    # --- main loop ----------------------------------------------------------------------

    async def run(self, on_ready: Callable[[], None] | None = None) -> None:
        """Bind, announce readiness, serve until shutdown, clean up socket and pid file."""
        listener = bind_unix_socket(self.socket_path)
        listener.setblocking(False)
        self._socket_id = _file_id(self.socket_path)
        try:
            self._write_pid_file()
            log.info("daemon %d listening on %s", os.getpid(), self.socket_path)
            if on_ready is not None:
                on_ready()
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, self.request_shutdown, signal.Signals(signum).name)
            async with asyncio.TaskGroup() as group:
                self._group = group
                accept = group.create_task(self._accept_loop(listener, group))
                idle = group.create_task(self._idle_watch())
                for starter in self._starters:
                    starter()
                await self._stopping.wait()
                accept.cancel()
                idle.cancel()
                # Its reader on the listener must go before the listener does: a closed
                # descriptor still in the loop's selector would make the next one that
                # gets its number unwatchable (the closers open pidfds and sockets).
                await asyncio.wait([accept])
                listener.close()
                await self._run_closers()
                await self._detach_all()
                self._remove_files()
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)
        finally:
            self._group = None
            listener.close()
            self._remove_files()
        log.info("daemon %d stopped", os.getpid())

    def _write_pid_file(self) -> None:
        write_text_atomic(self.pid_file, f"{os.getpid()}\n")

    def _remove_files(self) -> None:
        """Remove our socket and pid file, never ones a newer daemon put there."""
        with contextlib.suppress(OSError):
            # Same inode, and nobody listens now that our listener is closed: inode numbers
            # get reused, and a newer daemon's socket would be listening.
            if (self._socket_id is not None and _file_id(self.socket_path) == self._socket_id
                    and not is_listening(self.socket_path)):
                self.socket_path.unlink()
        self._socket_id = None
        with contextlib.suppress(OSError, ValueError):
            if int(self.pid_file.read_text().strip()) == os.getpid():
                self.pid_file.unlink()

    async def _run_closers(self) -> None:
        for closer in self._closers:
            try:
                async with asyncio.timeout(5.0):
                    await closer()
            except Exception:
                log.exception("error while closing %r at shutdown", closer)

    async def _detach_all(self) -> None:
        """Hang up on every client (attached ones talk to their supervisor, not to us) and
        end every task."""
        for conn in list(self.connections):
            conn.close()
        for task in list(self._tasks):
            task.cancel()

    async def _accept_loop(self, listener: socket.socket, group: asyncio.TaskGroup) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, _ = await loop.sock_accept(listener)
            except OSError as exc:
                log.warning("accept failed: %s", exc.strerror or exc)
                await asyncio.sleep(0.1)  # e.g. out of descriptors: do not spin
                continue
            refusal = peer_refusal(conn)
            if refusal is not None:
                log.warning("dropped a connection from %s", refusal)
                conn.close()
                continue
            task = group.create_task(self._serve(conn, peer_credentials(conn)[0]))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _idle_watch(self) -> None:
        idle_since: float | None = time.monotonic()
        while True:
            self._changed.clear()
            activity = self.activity()
            now = time.monotonic()
            if not activity.idle:
                idle_since = None
                await self._changed.wait()
                continue
            if idle_since is None:
                idle_since = now
            if should_exit_idle(activity, idle_since, now, self.idle_seconds):
                self.request_shutdown(f"idle for {self.idle_seconds:g}s")
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(idle_since + self.idle_seconds - now):
                    await self._changed.wait()

    # --- one connection -----------------------------------------------------------------

    async def _serve(self, sock: socket.socket, peer_pid: int) -> None:
        conn = Connection(sock, peer_pid)
        self.connections.add(conn)
        self._changed.set()
        try:
            await self._converse(conn)
        except (ConnectionError, OSError):
            pass  # the client went away; nothing to answer
        except Exception:
            log.exception("internal error serving pid %d", peer_pid)
        finally:
            self.connections.discard(conn)
            conn.close()
            self._changed.set()

    async def _converse(self, conn: Connection) -> None:
        try:
            greeted = await conn.greet(HANDSHAKE_TIMEOUT)
        except ProtocolError as exc:
            await conn.send(protocol.error_from(exc))
            return
        if not greeted:
            log.info("pid %d: no valid handshake; closing", conn.peer_pid)
            return
        while True:
            try:
                message = await conn.receive()
            except ProtocolError as exc:
                log.warning("pid %d: %s", conn.peer_pid, exc.message)
                await conn.send(protocol.error_from(exc))
                if isinstance(exc, FrameTooLargeError):
                    return  # out of step: hang up
                continue
            if message is None:
                return
            response = await self.dispatch(message, conn)
            if conn.handed_over:
                return
            await conn.send(response)

    async def dispatch(self, message: Message, conn: Connection | None = None) -> Message:
        """The one dispatch of the daemon's commands: a client's frame, or (``conn``
        None) a request the web server built from a REST call. The answer, or the
        refusal with its code."""
        who = "web" if conn is None else f"pid {conn.peer_pid}"
        try:
            command = protocol.parse_command(message)
        except ProtocolError as exc:
            log.info("%s: refused command: %s", who, exc.message)
            return protocol.error_from(exc)
        handler = self._handlers.get(command.TAG or "")
        if handler is None:
            return protocol.error(protocol.NOT_SUPPORTED,
                                  f"command {command.TAG!r} is not available in this daemon")
        log.debug("%s: %s", who, command.TAG)
        try:
            return await handler(conn, command)
        except CoopError as exc:
            return protocol.error_from(exc)

    # --- built-in commands ----------------------------------------------------------------

    async def _ls(self, _conn: Connection | None, _command: protocol.Ls) -> Message:
        return encode(protocol.LsReply(self.sessions.list()))

    async def _status(self, _conn: Connection | None, _command: protocol.Status) -> Message:
        return encode(protocol.StatusReply(
            pid=os.getpid(), version=protocol.VERSION,
            uptime=round(time.monotonic() - self.started, 3), sessions=len(self.sessions),
            clients=len(self.connections)))

    async def _shutdown(self, conn: Connection | None, _command: protocol.Shutdown) -> Message:
        self.request_shutdown("shutdown command from "
                              + ("web" if conn is None else f"pid {conn.peer_pid}"))
        return encode(protocol.ShutdownReply(os.getpid()))


def _file_id(path: Path) -> tuple[int, int]:
    st = path.lstat()
    return st.st_dev, st.st_ino
