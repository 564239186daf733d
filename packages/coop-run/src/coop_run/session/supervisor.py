"""The session supervisor (SPEC 5, docs/architecture.md "The session supervisor").

One process per session, outside the daemon (how it is started: ``session.process``).
The supervisor binds ``supervisor.sock`` (0600, peer uid checked), starts the sandbox
(cloned from itself, so the init is its child) and the agent on PTY 0, writes
``supervisor.json``, tells its starter, then serves on a fresh asyncio loop until killed.

Socket protocol: the daemon's framing and handshake (``{"version": 1}``), then commands::

    info                                  -> {"ok", "session": <ls entry>, "ptys": [detail],
                                              "inherited": [line]}
    attach  pty?, cols?, rows?, resume_from? (or offset), kind?   -> stream mode
    shell   command?, cols?, rows?, kind?                         -> new PTY, stream mode
    shell   detach: true, command?, cols?, rows?                  -> {"ok", "pty"} (no stream)
    close   pty                           -> {"ok"}: a shell PTY's process hung up
    restart                               -> {"ok", "pty": 0}
    kill    force?                        -> {"ok"}, then the supervisor exits
    adopt   request: <attach or shell>, plus one fd (SCM_RIGHTS)  -> {"ok"}
    detach_clients                        -> {"ok", "detached": N}
    watch                                 -> {"event": "session", ...} now and on each change

``attach``/``shell`` answer ``{"ok", "pty", "offset", "cols", "rows", "session"}`` and switch the
connection to stream mode (``read_only`` and ``sizing`` say what the client may do and
whether its window may size the PTY, by the rule of ``session.sizing``; web and tunnel
clients' input to the agent goes through the session's input filter); ``adopt`` does the
same on the passed socket (a client already past its handshake with the daemon: it gets
that answer as if it had asked directly).
A client must wait for the answer before sending stream frames. ``detach_clients`` is the
daemon's shutdown (SPEC 5): every client it handed over gets ``detached`` and is closed,
while clients that came straight to this socket and the session itself carry on. Every
command may carry ``session`` (ignored), so the daemon can forward its own requests
unchanged.

The loop never blocks on the sandbox: spawns, signals and the stop run in worker threads
(``Sandbox`` is thread-safe) while the loop serves every client, and what they return is
applied to the session back on the loop. A stop that waits out its grace answers ``info``
with ``"state": "stopping"`` meanwhile, and attached terminals keep working until their
processes end.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
import socket
from collections.abc import Coroutine, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from coop_run.errors import CoopError, FrameTooLargeError, ProtocolError, SupervisorError
from coop_run.inputfilter import InputFilter, Rules, applies
from coop_run.ipc import protocol
from coop_run.ipc.connection import FramedConnection
from coop_run.ipc.framing import Message
from coop_run.ipc.schema import encode
from coop_run.ipc.sockets import bind_unix_socket, peer_refusal
from coop_run.layout import SessionDir
from coop_run.procs import proc_start_time
from coop_run.sandbox.clone import PreparedInit
from coop_run.sandbox.host import ExitStatus, Sandbox, Spawned
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
RESPAWN_WAIT = 10.0  # a restart's answer waits this long at most for the agent's start
SANDBOX_THREADS = 4  # blocking sandbox calls at once (spawns, signals, the stop)
WATCH_COALESCE = 0.02  # changes this close together reach a watcher as one message

# --- the supervisor ---------------------------------------------------------------------


class Supervisor:
    """The session: sandbox, PTYs and the socket, on one asyncio loop."""

    def __init__(self, config: SupervisorConfig, *,
                 prepared: PreparedInit | None = None) -> None:
        self.config = config
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
        self._group: asyncio.TaskGroup | None = None
        self._accepting: asyncio.Task[None] | None = None
        self._restart_now = False
        self._respawn: asyncio.Task[None] | None = None  # the agent's pending restart
        self._respawn_early = asyncio.Event()  # set: it stops waiting out its delay
        self._tasks: set[asyncio.Task[None]] = set()
        self.rules = Rules(config.block_sequences,
                           ctrl_c_debounce_ms=config.ctrl_c_debounce_ms)
        self._changed = asyncio.Event()  # replaced at each change; watchers wait on it

    # -- start-up (before the loop: the sandbox clone needs a single thread) -------------

    def prepare(self) -> None:
        self.layout.path.mkdir(parents=True, exist_ok=True, mode=0o700)
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
        # The threads of the blocking sandbox calls; asyncio.run() joins them at the end.
        loop.set_default_executor(ThreadPoolExecutor(SANDBOX_THREADS,
                                                      thread_name_prefix="sandbox-call"))
        assert self.listener is not None and self._agent_start is not None
        agent = self._new_pty(0, "agent", self.config.agent, self.config.cols,
                              self.config.rows)
        self.ptys[0] = agent
        master, host_pid, pid = self._agent_start
        agent.attach_master(master, pid, host_pid)
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.add_signal_handler(signum, self._request_kill, False)
        control = self.sandbox.control_fd
        if control is not None:
            loop.add_reader(control, self._pump)
        self.listener.setblocking(False)
        logger.info("session %s serving on %s", self.config.sandbox.name,
                    self.layout.supervisor_socket)
        async with asyncio.TaskGroup() as group:
            self._group = group
            for pid_, status in self._early_exits:
                self._exited(pid_, status)
            self._early_exits.clear()
            self._accepting = self._own(self._accept_loop())
            await self._done.wait()
            for task in list(self._tasks):  # idle connections, pending restarts: all end
                task.cancel()

    def _new_pty(self, pty_id: int, role: str, argv: Sequence[str], cols: int,
                 rows: int) -> Pty:
        config = self.config
        assert self._loop is not None
        return Pty(self._loop, pty_id, role, argv, cols=cols, rows=rows,
                   scrollback=config.scrollback, max_backlog=config.max_backlog,
                   silence_burst=config.silence_burst, silence_after=config.silence_after,
                   web_idle=config.web_idle,
                   on_change=self._notify)

    def _notify(self) -> None:
        """What ``info`` shows changed: wake every watcher (they compare and send)."""
        self._changed.set()
        self._changed = asyncio.Event()

    def _own(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run ``coro`` as a task of serve()'s TaskGroup, cancelled when the session ends."""
        assert self._group is not None
        task = self._group.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _accept_loop(self) -> None:
        loop = asyncio.get_running_loop()
        assert self.listener is not None
        while True:  # also while stopping: info still answers, the rest is refused
            conn, _addr = await loop.sock_accept(self.listener)
            refusal = peer_refusal(conn)
            if refusal is not None:
                logger.warning("refused a connection from %s", refusal)
                conn.close()
                continue
            self._own(self._serve_conn(conn))

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

    async def _spawn(self, argv: Sequence[str], **options: Any) -> Spawned:
        """``sandbox.spawn`` in a worker thread. Cancelled meanwhile, the spawn still
        finishes there, and the master of a process nobody will serve is closed."""
        loop = asyncio.get_running_loop()
        call = functools.partial(self.sandbox.spawn, list(argv), **options)
        future = loop.run_in_executor(None, call)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            future.add_done_callback(self._unserved)
            raise

    def _unserved(self, future: asyncio.Future[Spawned]) -> None:
        """A spawn finished after its caller gave up: close the PTY master it returned,
        and forget the process's exit when it comes."""
        if future.cancelled() or future.exception() is not None:
            return
        spawned = future.result()
        if spawned.master_fd is not None:
            os.close(spawned.master_fd)
        self.sandbox.abandon(spawned.pid)

    def _attach(self, pty: Pty, master: int, spawned: Spawned) -> None:
        """Give ``pty`` its new process. The loop may have heard of that process's exit
        before it got the spawn's answer (another thread read both): if so, the exit is
        applied next, once the caller has finished (e.g. added the client of a shell)."""
        pty.attach_master(master, spawned.pid, spawned.host_pid)
        status = self.sandbox.take_exit(spawned.pid)
        if status is not None:
            assert self._loop is not None
            self._loop.call_soon(self._exited, spawned.pid, status)

    def _exited(self, pid: int, status: ExitStatus) -> None:
        pty = next((p for p in self.ptys.values() if p.pid == pid and p.master is not None),
                   None)
        if pty is None:  # not attached yet: ``_attach`` takes the exit instead
            return
        self.sandbox.take_exit(pid)
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
        self._schedule_respawn(delay / 1000)

    def _schedule_respawn(self, delay: float) -> None:
        self._respawn_early.clear()
        self._respawn = self._own(self._respawn_agent(delay))

    async def _respawn_agent(self, delay: float) -> None:
        """Start the agent again after ``delay`` seconds (sooner for the restart command;
        not at all once the session stops)."""
        if delay > 0 and not self.stopping:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._respawn_early.wait()
        agent = self.ptys[0]
        if self.stopping or agent.master is not None:
            return
        cols, rows = agent.size
        try:
            spawned = await self._spawn(self.config.agent, env=self.config.agent_env,
                                        pty=True, cols=cols, rows=rows)
        except CoopError as exc:
            logger.error("cannot restart the agent: %s", exc)
            agent.state = "dead"
            return
        if spawned.master_fd is None:
            agent.state = "dead"
            return
        if self.stopping:  # the stop began while it started: the stop ends it
            os.close(spawned.master_fd)
            return
        crash_looping = self.backoff.crash_looping
        self._attach(agent, spawned.master_fd, spawned)
        if crash_looping:
            agent.state = "crash-looping"
        self._own(self._settle(spawned.pid))
        logger.info("agent restarted as pid %d", spawned.pid)

    async def _settle(self, pid: int) -> None:
        """The agent has run long enough: no longer a crash loop, back-off starts over."""
        await asyncio.sleep(QUICK_EXIT)
        agent = self.ptys[0]
        if agent.pid == pid and agent.master is not None:
            self.backoff.reset()
            agent.state = "running"

    async def _restart_agent(self) -> None:
        agent = self.ptys[0]
        if agent.master is not None and agent.pid is not None:
            self._restart_now = True
            pid = agent.pid
            with contextlib.suppress(CoopError):
                await asyncio.to_thread(self.sandbox.signal, pid, signal.SIGHUP)
            self._own(self._kill_if_still(pid))
            return
        self.backoff.reset()
        if self._respawn is not None and not self._respawn.done():
            self._respawn_early.set()  # the pending restart happens now
        else:
            self._schedule_respawn(0)
        # The answer follows the new agent's start (a client that attaches right after
        # finds it), bounded like a spawn; the loop serves everyone meanwhile.
        assert self._respawn is not None
        await asyncio.wait({self._respawn}, timeout=RESPAWN_WAIT)

    async def _kill_if_still(self, pid: int) -> None:
        await asyncio.sleep(RESTART_KILL_AFTER)
        agent = self.ptys[0]
        if agent.pid == pid and agent.master is not None and not self.stopping:
            with contextlib.suppress(CoopError):
                await asyncio.to_thread(self.sandbox.signal, pid, signal.SIGKILL)

    async def _spawn_shell(self, command: str | None, cols: int, rows: int) -> Pty | None:
        """A new shell PTY; None if the session began to stop while it started."""
        argv = ["sh", "-c", command] if command else list(self.config.shell)
        spawned = await self._spawn(argv, pty=True, cols=cols, rows=rows)
        if spawned.master_fd is None:
            raise SupervisorError("the sandbox gave the shell no PTY")
        if self.stopping:
            os.close(spawned.master_fd)
            return None
        assert self._loop is not None
        pty_id = max(self.ptys) + 1  # (taken when it is added: shells may start at once)
        pty = self._new_pty(pty_id, "shell", argv, cols, rows)
        self.ptys[pty_id] = pty
        self._attach(pty, spawned.master_fd, spawned)
        return pty

    # -- connections ----------------------------------------------------------------------

    async def _serve_conn(self, sock: socket.socket) -> None:
        conn = FramedConnection(sock)
        try:
            if not await conn.greet(HANDSHAKE_TIMEOUT):
                return
            while True:
                message = await conn.receive()
                if message is None:
                    return
                try:
                    request = protocol.parse_supervisor_command(message)
                    if isinstance(request, protocol.SupervisorShell) and request.detach:
                        await conn.send(encode(protocol.PtyReply(
                            (await self._open_shell(request)).id)))
                        continue
                    if isinstance(request, protocol.SupervisorAttach | protocol.SupervisorShell):
                        await self._stream(conn.sock, request)
                        conn.detach()
                        return
                    if isinstance(request, protocol.Watch):
                        await self._watch(conn)
                        return
                    if isinstance(request, protocol.Adopt):
                        await self._adopt(conn, request)
                        continue
                    if isinstance(request, protocol.SupervisorKill):
                        await self._kill(request.force, conn)
                        return
                    await conn.send(await self._command(request))
                except ProtocolError as exc:
                    await conn.send(protocol.error_from(exc))
        except (ProtocolError, OSError, TimeoutError) as exc:
            logger.info("connection dropped: %s", exc)
            if isinstance(exc, FrameTooLargeError):
                with contextlib.suppress(OSError):
                    await conn.send(protocol.error_from(exc))
        finally:
            conn.close()

    async def _command(self, request: protocol.Request) -> Message:
        if isinstance(request, protocol.DetachClients):
            return encode(protocol.DetachedReply(self.detach_adopted()))
        if isinstance(request, protocol.SupervisorInfo):
            return encode(protocol.InfoReply(session=self.info(), ptys=self.pty_details(),
                                             inherited=list(self.config.inherited)))
        if isinstance(request, protocol.SupervisorRestart):
            if self.stopping:
                raise _stopping()
            await self._restart_agent()
            return encode(protocol.PtyReply(0))
        if isinstance(request, protocol.SupervisorClose):
            await self._close_pty(request.pty)
            return protocol.ok()
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
            await self._stream(client, _adopted_request(client, adopt.request), adopted=True)
        except BaseException:
            client.close()
            raise
        await conn.send(protocol.ok())

    def _window(self, request: protocol.SupervisorAttach | protocol.SupervisorShell,
                ) -> tuple[int, int]:
        agent = self.ptys[0]
        cols = agent.size[0] if request.cols is None else request.cols
        rows = agent.size[1] if request.rows is None else request.rows
        protocol.check_window(cols, rows)
        return cols, rows

    async def _open_shell(self, request: protocol.SupervisorShell) -> Pty:
        """A new shell PTY, of the request's size (else the agent's)."""
        if self.stopping:
            raise _stopping()
        cols, rows = self._window(request)
        try:
            shell = await self._spawn_shell(request.command, cols, rows)
        except CoopError as exc:
            raise ProtocolError(f"cannot start a shell: {exc}",
                                code=protocol.INTERNAL_ERROR) from exc
        if shell is None:
            raise _stopping()
        return shell

    async def _close_pty(self, pty_id: int) -> None:
        """Hang up a shell PTY's process (as closing its terminal would)."""
        pty = self.ptys.get(pty_id)
        if pty is None:
            raise ProtocolError(f"no PTY {pty_id}", code=protocol.PTY_NOT_FOUND)
        if pty.role == "agent":
            raise ProtocolError("PTY 0 is the agent: restart or kill the session instead",
                                code=protocol.INVALID_COMMAND)
        if pty.master is not None and pty.pid is not None:
            await asyncio.to_thread(self._send_hang_ups, [(pty.id, pty.pid)])

    async def _stream(self, sock: socket.socket,
                      request: protocol.SupervisorAttach | protocol.SupervisorShell, *,
                      adopted: bool = False) -> None:
        """Attach ``sock`` to a PTY (a new shell for ``shell``): stream mode from here on."""
        if self.stopping:
            raise _stopping()
        cols, rows = self._window(request)
        resume: int | None = None
        read_only, sizing = False, True
        if isinstance(request, protocol.SupervisorShell):
            pty = await self._open_shell(request)
        else:
            read_only, sizing = bool(request.read_only), request.sizing is not False
            resume = request.offset if request.resume_from is None else request.resume_from
            try:
                pty = self.ptys[request.pty]
            except KeyError:
                raise ProtocolError(f"no PTY {request.pty}",
                                    code=protocol.PTY_NOT_FOUND) from None
        assert self._loop is not None
        filtered = applies(request.kind, pty.role) and not read_only
        client = StreamClient(self._loop, sock, request.kind, self._client_gone,
                              read_only=read_only,
                              input_filter=InputFilter(self.rules) if filtered else None)
        client.adopted = adopted
        try:
            # The session's name is for the client's "detached from NAME".
            response = pty.add_client(client, cols, rows, resume, self.config.sandbox.name,
                                      sizing=sizing)
        except ValueError as exc:
            raise ProtocolError(str(exc), code=protocol.INVALID_COMMAND) from exc
        self.clients.add(client)
        client.start(pty, encode(response))

    def _client_gone(self, client: StreamClient) -> None:
        self.clients.discard(client)
        self._notify()

    async def _watch(self, conn: FramedConnection) -> None:
        """Send the session's ``ls`` entry now and whenever it changes, until the peer
        hangs up (or says anything) or the session ends."""
        loop = asyncio.get_running_loop()
        hang_up = loop.create_task(conn.receive())
        waiting: asyncio.Task[bool] | None = None
        last: Message | None = None
        try:
            while True:
                changed = self._changed
                entry = encode(protocol.SessionChanged(self.info()))
                if entry != last:
                    await conn.send(entry)
                    last = entry
                waiting = loop.create_task(changed.wait())
                done, _ = await asyncio.wait({hang_up, waiting},
                                             return_when=asyncio.FIRST_COMPLETED)
                if hang_up in done:
                    return
                await asyncio.sleep(WATCH_COALESCE)
        finally:  # a cancelled watch (the session ends) leaves neither task pending
            hang_up.cancel()
            if waiting is not None:
                waiting.cancel()

    def detach_adopted(self) -> int:
        """Send ``detached`` to every client the daemon handed over and hang up on it."""
        adopted = [c for c in self.clients if c.adopted and not c.closed]
        for client in adopted:
            client.send_and_close(encode(protocol.Detached()))
        if adopted:
            logger.info("detached %d client(s) at the daemon's request", len(adopted))
        return len(adopted)

    # -- information ----------------------------------------------------------------------

    def info(self) -> protocol.SessionEntry:
        """This session's ``ls`` entry (SPEC 6)."""
        kinds = {kind: 0 for kind in CLIENT_KINDS}
        for client in self.clients:
            kinds[client.kind] += 1
        agent = self.ptys.get(0)
        state = "stopping" if self.stopping else "running"
        if agent is not None and agent.state in ("crash-looping", "dead"):
            state = agent.state
        return protocol.SessionEntry(
            name=self.config.sandbox.name, workspace=str(self.sandbox.workspace_real),
            pid=os.getpid(), created=self.sandbox.created, state=state,
            ptys=[p.info() for p in self.ptys.values()], web_clients=kinds["web"],
            local_clients=kinds["local"], tunnel_clients=kinds["tunnel"])

    def pty_details(self) -> list[protocol.PtyDetail]:
        """What ``ls`` does not show: pids, stream offsets, sizes, clients per PTY."""
        return [protocol.PtyDetail(id=p.id, pid=p.pid, host_pid=p.host_pid,
                                   offset=p.fanout.offset, cols=p.size[0], rows=p.size[1],
                                   clients=len(p.clients))
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
        self._notify()
        logger.info("stopping session %s (force=%s)", self.config.sandbox.name, force)
        self._respawn_early.set()  # a pending restart gives up
        control = self.sandbox.control_fd
        if control is not None:  # the stop closes it: no more pumping from here
            self._loop_remove_reader(control)
        if not force:
            await self._hang_up()
        try:
            await asyncio.to_thread(self.sandbox.stop, grace=self.config.stop_grace,
                                    force=force)
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
        if self._accepting is not None:  # before the listener closes under it
            self._accepting.cancel()
            await asyncio.wait([self._accepting])
        self.cleanup()
        if conn is not None:
            with contextlib.suppress(OSError):
                await conn.send(protocol.ok())
        assert self._done is not None
        self._done.set()

    async def _hang_up(self) -> None:
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
        targets = [(pty.id, pty.pid) for pty in self.ptys.values()
                   if pty.master is not None and pty.pid is not None]
        if targets:
            await asyncio.to_thread(self._send_hang_ups, targets)

    def _send_hang_ups(self, targets: list[tuple[int, int]]) -> None:
        """In a worker thread: sandbox calls only, no session state."""
        for pty_id, pid in targets:
            for signo in (signal.SIGHUP, signal.SIGCONT):
                try:
                    self.sandbox.signal(pid, signo)
                except CoopError as exc:  # it has just exited, or the sandbox is gone
                    logger.info("hanging up pty %d: %s", pty_id, exc)
                    break

    async def _wait_flushed(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + FLUSH_TIMEOUT
        while self.clients and loop.time() < deadline:
            await asyncio.sleep(0.01)  # the clients' writers run meanwhile
        for client in list(self.clients):
            client.close()


def _stopping() -> ProtocolError:
    return ProtocolError("the session is stopping", code=protocol.SESSION_NOT_FOUND)


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
