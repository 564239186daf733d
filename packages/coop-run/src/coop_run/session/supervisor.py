"""The session supervisor (SPEC 5, docs/architecture.md "The session supervisor").

One process per session, outside the daemon (how it is started: ``supervisor_process``).
The supervisor binds ``supervisor.sock`` (0600, peer uid checked), starts the sandbox
(cloned from itself, so the init is its child) and the agent on PTY 0, writes
``supervisor.json``, tells its starter, then serves on a fresh asyncio loop until killed.

Socket protocol: the daemon's framing and handshake (``{"version": 1}``), then commands::

    info                                  -> {"ok", "session": <ls entry>, "ptys": [detail]}
    attach  pty?, cols?, rows?, resume_from? (or offset), kind?   -> stream mode
    shell   command?, cols?, rows?, kind?                         -> new PTY, stream mode
    restart                               -> {"ok", "pty": 0}
    kill    force?                        -> {"ok"}, then the supervisor exits
    adopt   request: <attach or shell>, plus one fd (SCM_RIGHTS)  -> {"ok"}
    detach_clients                        -> {"ok", "detached": N}

``attach``/``shell`` answer ``{"ok", "pty", "offset", "cols", "rows", "session"}`` and switch the
connection to stream mode; ``adopt`` does the same on the passed socket (a client already
past its handshake with the daemon: it gets that answer as if it had asked directly).
A client must wait for the answer before sending stream frames. ``detach_clients`` is the
daemon's shutdown (SPEC 5): every client it handed over gets ``detached`` and is closed,
while clients that came straight to this socket and the session itself carry on. Every
command may carry ``session`` (ignored), so the daemon can forward its own requests
unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import Mapping
from typing import Any

from coop_run.errors import CoopError, FrameTooLargeError, ProtocolError, SupervisorError
from coop_run.ipc import protocol
from coop_run.ipc.connection import FramedConnection
from coop_run.ipc.framing import Message
from coop_run.ipc.schema import encode
from coop_run.ipc.sockets import bind_unix_socket, peer_uid
from coop_run.layout import SessionDir
from coop_run.procs import proc_start_time
from coop_run.sandbox.clone import PreparedInit
from coop_run.sandbox.host import ExitStatus, Sandbox
from coop_run.session.config import SupervisorConfig
from coop_run.session.ptys import (
    CLIENT_KINDS,
    QUICK_EXIT,
    Backoff,
    Pty,
    StreamClient,
    exit_notice,
    restart_notice,
)
from coop_run.statefiles import write_json_atomic

logger = logging.getLogger(__name__)

HANDSHAKE_TIMEOUT = 10.0
FLUSH_TIMEOUT = 1.0  # how long a kill waits for clients to take their "detached"
RESTART_KILL_AFTER = 2.0

# --- the supervisor ---------------------------------------------------------------------


class Supervisor:
    """The session: sandbox, PTYs and the socket, on one asyncio loop."""

    def __init__(self, config: SupervisorConfig, *,
                 prepared: PreparedInit | None = None) -> None:
        self.config = config
        self.session_dir = config.session_dir
        self.layout = SessionDir(config.session_dir)
        self.sandbox = Sandbox(config.sandbox, prepared=prepared)
        self.listener: socket.socket | None = None
        self.ptys: dict[int, Pty] = {}
        self.clients: set[StreamClient] = set()
        self.backoff = Backoff(config.restart_delay_ms, config.restart_max_delay_ms)
        self.stopping = False
        self._early_exits: list[tuple[int, ExitStatus]] = []
        self._agent_start: tuple[int, int | None, int] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._done: asyncio.Event | None = None
        self._restart_now = False
        self._restart_timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # -- start-up (before the loop: the sandbox clone needs a single thread) -------------

    def prepare(self) -> None:
        self.session_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.listener = bind_unix_socket(self.layout.supervisor_socket)
        self.sandbox.on_exit = self._on_exit
        # The agent's spawn goes out while the init still builds the root (pipelined);
        # a failure of that set-up surfaces from the spawn.
        self.sandbox.start(wait_ready=False)
        try:
            spawned = self.sandbox.spawn(list(self.config.agent), env=self.config.agent_env,
                                         pty=True, cols=self.config.cols, rows=self.config.rows)
        except BaseException:
            self.sandbox.stop(force=True)
            raise
        if spawned.master_fd is None:
            raise SupervisorError("the sandbox gave the agent no PTY")
        self._agent_start = (spawned.master_fd, spawned.host_pid, spawned.pid)
        self._write_state()

    def _write_state(self) -> None:
        pid = os.getpid()
        state = {"pid": pid, "start": proc_start_time(pid),
                 "name": self.config.sandbox.name,
                 "workspace": str(self.sandbox.workspace_real),
                 "created": self.sandbox.created, "socket": str(self.layout.supervisor_socket)}
        write_json_atomic(self.layout.supervisor_state, state)

    def cleanup(self) -> None:
        """Remove the socket and the state file (the sandbox is stopped by then)."""
        if self.listener is not None:
            self.listener.close()
            self.listener = None
            self.layout.supervisor_socket.unlink(missing_ok=True)
        self.layout.supervisor_state.unlink(missing_ok=True)

    def _on_exit(self, pid: int, status: ExitStatus) -> None:
        """Called by whichever code read the sandbox channel: hand over to the loop."""
        if self._loop is None:
            self._early_exits.append((pid, status))
        else:
            self._loop.call_soon_threadsafe(self._exited, pid, status)

    # -- the loop -------------------------------------------------------------------------

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._done = asyncio.Event()
        assert self.listener is not None and self._agent_start is not None
        agent = Pty(loop, 0, "agent", self.config.agent, cols=self.config.cols,
                    rows=self.config.rows, scrollback=self.config.scrollback,
                    max_backlog=self.config.max_backlog)
        self.ptys[0] = agent
        master, host_pid, pid = self._agent_start
        agent.attach_master(master, pid, host_pid)
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.add_signal_handler(signum, self._request_kill, False)
        control = self.sandbox.control_fd
        if control is not None:
            loop.add_reader(control, self._pump)
        for pid_, status in self._early_exits:
            self._exited(pid_, status)
        self._early_exits.clear()
        self.listener.setblocking(False)
        logger.info("session %s serving on %s", self.config.sandbox.name,
                    self.layout.supervisor_socket)
        async with asyncio.TaskGroup() as group:
            accept = group.create_task(self._accept_loop(group))
            await self._done.wait()
            accept.cancel()
            for task in self._tasks:  # idle command connections must not hold the exit
                task.cancel()

    async def _accept_loop(self, group: asyncio.TaskGroup) -> None:
        loop = asyncio.get_running_loop()
        assert self.listener is not None
        while not self.stopping:
            conn, _addr = await loop.sock_accept(self.listener)
            try:
                uid = peer_uid(conn)
            except OSError:
                conn.close()
                continue
            if uid != os.geteuid():
                logger.warning("refused a connection from uid %d", uid)
                conn.close()
                continue
            task = group.create_task(self._serve_conn(conn))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _pump(self) -> None:
        self.sandbox.pump()
        if not self.sandbox.alive:
            logger.warning("the sandbox init is gone; ending the session")
            control = self.sandbox.control_fd
            if control is not None:
                self._loop_remove_reader(control)
            self._request_kill(True)

    def _loop_remove_reader(self, fd: int) -> None:
        if self._loop is not None:
            self._loop.remove_reader(fd)

    # -- processes ------------------------------------------------------------------------

    def _exited(self, pid: int, status: ExitStatus) -> None:
        pty = next((p for p in self.ptys.values() if p.pid == pid and p.master is not None),
                   None)
        if pty is None:
            return
        pty.detach_master()
        pty.pid = None
        pty.publish(exit_notice(status.code, status.signal))
        pty.publish_event(encode(protocol.PtyExited(pty.id, status.code, status.signal)))
        logger.info("pty %d (%s) exited: code %s signal %s", pty.id, pty.role, status.code,
                    status.signal)
        if pty.role != "agent" or self.stopping:
            pty.state = "exited"
            return
        if self._restart_now:
            self._restart_now = False
            self.backoff.reset()
            delay = 0
        elif not self.config.auto_restart:
            pty.state = "exited"
            return
        else:
            assert self._loop is not None
            delay = self.backoff.next_delay(self._loop.time() - pty.started)
        pty.state = "crash-looping" if self.backoff.crash_looping else "restarting"
        pty.publish(restart_notice(delay))
        pty.publish_event(encode(protocol.PtyRestarting(pty.id, delay / 1000,
                                                         self.backoff.streak)))
        assert self._loop is not None
        self._restart_timer = self._loop.call_later(delay / 1000, self._respawn_agent)

    def _respawn_agent(self) -> None:
        self._restart_timer = None
        agent = self.ptys[0]
        if self.stopping or agent.master is not None:
            return
        cols, rows = agent.size
        try:
            spawned = self.sandbox.spawn(list(self.config.agent), env=self.config.agent_env,
                                         pty=True, cols=cols, rows=rows)
        except CoopError as exc:
            logger.error("cannot restart the agent: %s", exc)
            agent.state = "dead"
            return
        if spawned.master_fd is None:
            agent.state = "dead"
            return
        crash_looping = self.backoff.crash_looping
        agent.attach_master(spawned.master_fd, spawned.pid, spawned.host_pid)
        if crash_looping:
            agent.state = "crash-looping"
        assert self._loop is not None
        self._loop.call_later(QUICK_EXIT, self._settled, spawned.pid)
        logger.info("agent restarted as pid %d", spawned.pid)

    def _settled(self, pid: int) -> None:
        """The agent has run long enough: no longer a crash loop, back-off starts over."""
        agent = self.ptys[0]
        if agent.pid == pid and agent.master is not None:
            self.backoff.reset()
            agent.state = "running"

    def _restart_agent(self) -> None:
        agent = self.ptys[0]
        if agent.master is not None and agent.pid is not None:
            self._restart_now = True
            pid = agent.pid
            with contextlib.suppress(CoopError):
                self.sandbox.signal(pid, signal.SIGHUP)
            assert self._loop is not None
            self._loop.call_later(RESTART_KILL_AFTER, self._kill_if_still, pid)
            return
        if self._restart_timer is not None:
            self._restart_timer.cancel()
        self.backoff.reset()
        self._respawn_agent()

    def _kill_if_still(self, pid: int) -> None:
        agent = self.ptys[0]
        if agent.pid == pid and agent.master is not None:
            with contextlib.suppress(CoopError):
                self.sandbox.signal(pid, signal.SIGKILL)

    def _spawn_shell(self, command: str | None, cols: int, rows: int) -> Pty:
        argv = ["sh", "-c", command] if command else list(self.config.shell)
        assert self._loop is not None
        pty_id = max(self.ptys) + 1
        spawned = self.sandbox.spawn(argv, pty=True, cols=cols, rows=rows)
        if spawned.master_fd is None:
            raise SupervisorError("the sandbox gave the shell no PTY")
        pty = Pty(self._loop, pty_id, "shell", argv, cols=cols, rows=rows,
                  scrollback=self.config.scrollback, max_backlog=self.config.max_backlog)
        self.ptys[pty_id] = pty
        pty.attach_master(spawned.master_fd, spawned.pid, spawned.host_pid)
        return pty

    # -- connections ----------------------------------------------------------------------

    async def _serve_conn(self, sock: socket.socket) -> None:
        conn = FramedConnection(sock)
        try:
            if not await conn.greet(HANDSHAKE_TIMEOUT):
                return
            while not self.stopping:
                message = await conn.receive()
                if message is None:
                    return
                try:
                    request = protocol.parse_supervisor_command(message)
                    if isinstance(request, protocol.SupervisorAttach | protocol.SupervisorShell):
                        self._stream(conn.sock, request)
                        conn.detach()
                        return
                    if isinstance(request, protocol.Adopt):
                        await self._adopt(conn, request)
                        continue
                    if isinstance(request, protocol.SupervisorKill):
                        await self._kill(request.force, conn)
                        return
                    await conn.send(self._command(request))
                except ProtocolError as exc:
                    await conn.send(protocol.error_from(exc))
        except (ProtocolError, OSError, TimeoutError) as exc:
            logger.info("connection dropped: %s", exc)
            if isinstance(exc, FrameTooLargeError):
                with contextlib.suppress(OSError):
                    await conn.send(protocol.error_from(exc))
        finally:
            conn.close()

    def _command(self, request: protocol.Request) -> Message:
        if isinstance(request, protocol.DetachClients):
            return encode(protocol.DetachedReply(self.detach_adopted()))
        if isinstance(request, protocol.SupervisorInfo):
            return encode(protocol.InfoReply(session=self.info(), ptys=self.pty_details()))
        if isinstance(request, protocol.SupervisorRestart):
            self._restart_agent()
            return encode(protocol.PtyReply(0))
        raise ProtocolError(f"unexpected command {request.TAG!r}",
                            code=protocol.INVALID_COMMAND)

    async def _adopt(self, conn: FramedConnection, adopt: protocol.Adopt) -> None:
        fds = conn.take_fds()
        if len(fds) != 1:
            for fd in fds:
                os.close(fd)
            raise ProtocolError("adopt: expected exactly one descriptor",
                                code=protocol.INVALID_COMMAND)
        client = socket.socket(fileno=fds[0])
        try:
            self._stream(client, _adopted_request(client, adopt.request), adopted=True)
        except BaseException:
            client.close()
            raise
        await conn.send(protocol.ok())

    def _stream(self, sock: socket.socket,
                request: protocol.SupervisorAttach | protocol.SupervisorShell, *,
                adopted: bool = False) -> None:
        """Attach ``sock`` to a PTY (a new shell for ``shell``): stream mode from here on."""
        if self.stopping:
            raise ProtocolError("the session is stopping", code=protocol.SESSION_NOT_FOUND)
        agent = self.ptys[0]
        cols = agent.size[0] if request.cols is None else request.cols
        rows = agent.size[1] if request.rows is None else request.rows
        protocol.check_window(cols, rows)
        resume: int | None = None
        if isinstance(request, protocol.SupervisorShell):
            try:
                pty = self._spawn_shell(request.command, cols, rows)
            except CoopError as exc:
                raise ProtocolError(f"cannot start a shell: {exc}",
                                    code=protocol.INTERNAL_ERROR) from exc
        else:
            resume = request.offset if request.resume_from is None else request.resume_from
            try:
                pty = self.ptys[request.pty]
            except KeyError:
                raise ProtocolError(f"no PTY {request.pty}",
                                    code=protocol.PTY_NOT_FOUND) from None
        assert self._loop is not None
        client = StreamClient(self._loop, sock, request.kind, self.clients.discard)
        client.adopted = adopted
        try:
            # The session's name is for the client's "detached from NAME".
            response = pty.add_client(client, cols, rows, resume, self.config.sandbox.name)
        except ValueError as exc:
            raise ProtocolError(str(exc), code=protocol.INVALID_COMMAND) from exc
        self.clients.add(client)
        client.start(pty, encode(response))

    def detach_adopted(self) -> int:
        """Send ``detached`` to every client the daemon handed over and hang up on it."""
        adopted = [c for c in self.clients if c.adopted and not c.closed]
        for client in adopted:
            client.send_and_close(encode(protocol.Detached()))
        if adopted:
            logger.info("detached %d client(s) at the daemon's request", len(adopted))
        return len(adopted)

    # -- information ----------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        """This session's ``ls`` entry (SPEC 6)."""
        kinds = {kind: 0 for kind in CLIENT_KINDS}
        for client in self.clients:
            kinds[client.kind] += 1
        agent = self.ptys.get(0)
        state = "stopping" if self.stopping else "running"
        if agent is not None and agent.state in ("crash-looping", "dead"):
            state = agent.state
        return {
            "name": self.config.sandbox.name,
            "workspace": str(self.sandbox.workspace_real),
            "pid": os.getpid(),
            "created": self.sandbox.created,
            "state": state,
            "ptys": [p.info() for p in self.ptys.values()],
            "web_clients": kinds["web"],
            "local_clients": kinds["local"],
            "tunnel_clients": kinds["tunnel"],
        }

    def pty_details(self) -> list[dict[str, Any]]:
        """What ``ls`` does not show: pids, stream offsets, sizes, clients per PTY."""
        return [{"id": p.id, "pid": p.pid, "host_pid": p.host_pid, "offset": p.fanout.offset,
                 "cols": p.size[0], "rows": p.size[1], "clients": len(p.clients)}
                for p in self.ptys.values()]

    # -- the end ----------------------------------------------------------------------------

    def _request_kill(self, force: bool) -> None:
        if not self.stopping and self._loop is not None:
            task = self._loop.create_task(self._kill(force, None))
            self._tasks.add(task)  # owned: its failure must end serve(), not vanish
            task.add_done_callback(self._kill_done)

    def _kill_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("stopping session %s failed: %s", self.config.sandbox.name,
                         task.exception())
            if self._done is not None:
                self._done.set()

    async def _kill(self, force: bool, conn: FramedConnection | None) -> None:
        """Stop the sandbox, detach every client, remove the socket and state, exit."""
        if self.stopping:
            if conn is not None:
                await conn.send(protocol.ok())
            return
        self.stopping = True
        logger.info("stopping session %s (force=%s)", self.config.sandbox.name, force)
        if self._restart_timer is not None:
            self._restart_timer.cancel()
        control = self.sandbox.control_fd
        if control is not None:
            self._loop_remove_reader(control)
        if not force:
            self._hang_up()
        try:
            self.sandbox.stop(grace=self.config.stop_grace, force=force)
        except CoopError as exc:
            logger.error("stopping the sandbox: %s", exc)
        for pty in self.ptys.values():
            pty.detach_master()
            if pty.state not in ("exited",):
                pty.state = "dead"
        for client in list(self.clients):
            client.send_and_close(encode(protocol.Detached()))
        await self._wait_flushed()
        for pty in self.ptys.values():
            pty.close()
        self.cleanup()
        if conn is not None:
            with contextlib.suppress(OSError):
                await conn.send(protocol.ok())
        assert self._done is not None
        self._done.set()

    def _hang_up(self) -> None:
        """Give each PTY's process what a hang-up gives it (closing a terminal window,
        ``tmux kill-session``): SIGHUP, then SIGCONT in case it is stopped.

        The init starts every PTY process as the leader of a new session with that PTY
        as its controlling terminal, so when the leader dies of it the kernel sends
        SIGHUP on to the terminal's foreground job. An interactive shell ignores SIGTERM
        but not SIGHUP: a graceful kill of a shell agent no longer waits out the grace,
        and whatever survives still gets SIGTERM, the grace, then SIGKILL.

        Signals, not closing the masters: a master is closed only after reading what is
        left on it, and a process still writing would keep that read going forever.
        """
        for pty in self.ptys.values():
            pid = pty.pid
            if pty.master is None or pid is None:
                continue
            for signo in (signal.SIGHUP, signal.SIGCONT):
                try:
                    self.sandbox.signal(pid, signo)
                except CoopError as exc:  # it has just exited, or the sandbox is gone
                    logger.info("hanging up pty %d: %s", pty.id, exc)
                    break

    async def _wait_flushed(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + FLUSH_TIMEOUT
        while self.clients and loop.time() < deadline:
            await asyncio.sleep(0.01)  # the clients' writers run meanwhile
        for client in list(self.clients):
            client.close()


def _adopted_request(client: socket.socket, message: Mapping[str, Any],
                     ) -> protocol.SupervisorAttach | protocol.SupervisorShell:
    request = protocol.parse_supervisor_command(message)
    if not isinstance(request, protocol.SupervisorAttach | protocol.SupervisorShell):
        raise ProtocolError("adopt: the request must be attach or shell",
                            code=protocol.INVALID_COMMAND)
    if client.family != socket.AF_UNIX or client.type != socket.SOCK_STREAM:
        raise ProtocolError("adopt: the descriptor is not a unix stream socket",
                            code=protocol.INVALID_COMMAND)
    return request
