"""The daemon's session commands (SPEC 6): ``create``, ``attach``, ``shell``, ``kill``,
``restart``, ``close_pty`` and ``ls``, served on the registry (for the CLI and, through
``Daemon.dispatch``, the web server's REST API); ``create`` reads the workspace's Coopfile
and build, then has the zygote start the supervisor.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import os
import time
import weakref
from collections.abc import AsyncIterator, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from coop_build.paths import CoopPaths, display_path
from coop_run import trust
from coop_run.daemon import inheritance
from coop_run.daemon.registry import SessionRegistry, pick_name, safe_name
from coop_run.daemon.server import Connection, Daemon
from coop_run.daemon.supervisors import Session
from coop_run.daemon.zygote_client import ZygoteClient
from coop_run.errors import CoopError, UntrustedCoopfileError
from coop_run.ipc import protocol
from coop_run.ipc.framing import Message
from coop_run.ipc.schema import encode
from coop_run.layout import RunLayout, check_session_name
from coop_run.procs import proc_start_time
from coop_run.sandbox.config import SandboxConfig
from coop_run.session.config import SupervisorConfig, web_idle

if TYPE_CHECKING:
    from coop_build.coopfile import Coopfile
    from coop_build.layers import LoadedCoopfile

logger = logging.getLogger(__name__)

SHELL_TIMEOUT = 15.0  # a shell's start, answered when it runs (a loaded machine: seconds)
HOME_WORKSPACE = ("the workspace is your home directory: the agent sees everything in your "
                  "home (coop's own directory excepted)")


def image_env(entries: Iterable[str]) -> dict[str, str]:
    """A base image's config ``Env`` (``NAME=value`` strings) as a mapping."""
    out: dict[str, str] = {}
    for entry in entries:
        key, sep, value = entry.partition("=")
        if sep and key:
            out[key] = value
    return out


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
        self.zygote = ZygoteClient(self.layout.daemon_log, self.environ)
        self._create_locks: weakref.WeakValueDictionary[str, asyncio.Lock] = (
            weakref.WeakValueDictionary())
        self._starting: dict[str, str] = {}  # name -> workspace, while its create runs

    def register(self) -> None:
        for name, handler in (("create", self.create), ("attach", self.attach),
                              ("shell", self.shell), ("kill", self.kill),
                              ("restart", self.restart), ("ls", self.ls),
                              ("close_pty", self.close_pty)):
            self.daemon.register(name, handler)
        self.zygote.start()

    def close(self) -> None:
        """The daemon ends: its session starter goes too (sessions stay)."""
        self.zygote.close()

    async def ls(self, _conn: Connection | None, _command: protocol.Ls) -> Message:
        return encode(protocol.LsReply(await self.registry.refresh()))

    async def create(self, _conn: Connection | None, command: protocol.Create) -> Message:
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
                if config.sandbox.proxies:  # host names of inherited proxies (veth)
                    opened, unresolved = await inheritance.resolve_endpoints(
                        config.sandbox.proxies)
                    config.sandbox.proxies = tuple(opened)
                    warnings += unresolved
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
            if record is None and store.host_root_build(workspace):
                raise CoopError(f"the rootfs of {display_path(workspace, self.environ)} was "
                                "built when root's sandboxes ran as host root: run coop "
                                "rebuild there", code=protocol.ROOTFS_NOT_BUILT)
            if record is None:
                raise CoopError(f"no rootfs built for {display_path(workspace, self.environ)}: "
                                "run coop init there first", code=protocol.ROOTFS_NOT_BUILT)
            warnings: builtins.list[str] = []
            current = quickcheck.check(self.paths, workspace, global_path=global_path,
                                       overrides=overrides, environ=environ)
            if current is None:
                warnings.append(self._stale_build(record.host, record.system))
            layers = store.lower_dirs(record)
        except CoopBuildError as exc:
            raise CoopError(exc.message, code=exc.code) from exc
        coopfile = loaded.coopfile
        # Resolved once: the path refused or trusted is the path sent (the supervisor
        # then mounts only the directory whose real path this is).
        mount = trust.resolve_mount(workspace, coopfile.workspace.mount)
        refusal = trust.mount_refusal(workspace, coopfile.workspace.mount, self.paths.home,
                                      resolved=mount)
        if refusal is not None:
            raise CoopError(refusal, code=protocol.INVALID_COOPFILE)
        self._check_trust(loaded, workspace, overrides, mount)
        inherited = self._inheritance(coopfile, client_env)
        warnings += inherited.warnings
        env = image_env(record.env)
        env.update(inherited.env)  # proxy passwords: never logged
        env.update(expand_env(coopfile.env, environ))  # secrets: never logged
        home = self.environ.get("HOME")
        if home and Path(os.path.realpath(home)) == mount:  # also a trusted mount of it
            warnings.append(HOME_WORKSPACE)
        sandbox = SandboxConfig(
            name=name, layers=list(layers), session_dir=self.layout.session(name).path,
            workspace=mount, workspace_inside=coopfile.workspace.path,
            host_image=record.host, persist=list(coopfile.session.persist), env=env,
            user_home=Path(self.environ.get("HOME", "/")),
            hide=(self.paths.home,),  # coop's sockets and sessions, never the agent's
            readonly_binds=inherited.binds, proxies=inherited.endpoints,
        )
        config = SupervisorConfig(  # noqa: S604 - "shell" is the session's shell argv
            sandbox=sandbox, agent=[coopfile.agent.command, *coopfile.agent.args],
            shell=(coopfile.session.shell,), auto_restart=coopfile.session.auto_restart,
            restart_delay_ms=coopfile.session.restart_delay_ms, cols=size[0], rows=size[1],
            log_file=self.layout.session_log(name), inherited=inherited.summary,
            block_sequences=tuple(coopfile.input_filter.blocked_bytes()),
            ctrl_c_debounce_ms=coopfile.input_filter.ctrl_c_debounce_ms,
            web_idle=web_idle(self.environ),
        )
        if inherited.env:
            logger.info("session %s inherits %s", name, ", ".join(inherited.env))  # names
        return config, coopfile.network.mode, warnings

    @staticmethod
    def _stale_build(host: bool, system: str) -> str:
        """Why the workspace's build is not current (``quickcheck``), in one line."""
        from coop_build.hostlayer import system_identity

        if host and system != system_identity():
            return ('the host\'s system changed since the last build of image = "host"; '
                    "run coop init to rebuild (using the old rootfs)")
        return ("the Coopfile changed since the last build; "
                "run coop init to rebuild (using the old rootfs)")

    def _inheritance(self, coopfile: Coopfile, client_env: Mapping[str, str]
                     ) -> inheritance.Inheritance:
        """``[network] inherit`` from the client's variables (never the daemon's own)."""
        from coop_build.errors import CoopBuildError

        names = coopfile.network.inherited
        tls = None
        if "tls" in names:
            try:
                tls = inheritance.session_trust(client_env, home=self.environ.get("HOME"),
                                                coop_home=self.paths.home)
            except CoopBuildError as exc:
                raise CoopError(exc.message, code=exc.code) from exc
        return inheritance.plan_inheritance(names, coopfile.network.mode, client_env, tls,
                                            environ=self.environ)

    def _check_trust(self, loaded: LoadedCoopfile, workspace: Path,
                     overrides: Mapping[str, Any] | None, mount: Path) -> None:
        """Refuse a workspace Coopfile that widens the sandbox (a mount outside the
        workspace, the host's network, variables of the user's environment) unless the
        user trusted these very bytes for it: ``UntrustedCoopfileError``, which lists what
        it asks. The global layer and the overrides are the user's own."""
        layer = loaded.layer("workspace")
        if layer is None or layer.path is None or layer.sha256 is None:
            return
        below = loaded.layer("global")
        asks = trust.what_it_asks(layer.data, start=workspace, above=overrides,
                                  below=None if below is None else below.data, mount=mount)
        if not asks or trust.TrustStore(self.layout).trusts(layer.path, layer.sha256, asks):
            return
        key = trust.trust_key(layer.path)
        logger.info("create in %s refused: %s is not trusted (it asks for %s)", workspace,
                    key, ", ".join(ask.grant for ask in asks))  # names, never values
        raise UntrustedCoopfileError(
            trust.refusal_message(key, display_path(key, self.environ), asks),
            path=key, sha256=layer.sha256, asks=asks)

    @property
    def paths(self) -> CoopPaths:
        return self.registry.paths

    @property
    def layout(self) -> RunLayout:
        return RunLayout(self.registry.paths)

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

    async def attach(self, conn: Connection | None, command: protocol.Attach) -> Message:
        session = self.registry.find(command.session)
        return await self._hand_over(conn, session, protocol.SupervisorAttach(
            pty=0 if command.pty is None else command.pty, cols=command.cols,
            rows=command.rows, offset=command.offset))

    async def shell(self, conn: Connection | None, command: protocol.Shell) -> Message:
        session = self.registry.find(command.session)
        if command.detach:  # started only: the client attaches to its id when it wants
            reply = await self.registry.command(session, protocol.SupervisorShell(
                command=command.command, cols=command.cols, rows=command.rows, detach=True),
                protocol.PtyReply, timeout=SHELL_TIMEOUT)
            logger.info("session %s: shell %d started", session.name, reply.pty)
            return encode(reply)
        return await self._hand_over(conn, session, protocol.SupervisorShell(
            command=command.command, cols=command.cols, rows=command.rows))

    async def _hand_over(self, conn: Connection | None, session: Session,
                         request: protocol.SupervisorAttach | protocol.SupervisorShell,
                         ) -> Message:
        if conn is None:
            raise CoopError(f"{request.TAG} needs a connection to stream on",
                            code=protocol.INVALID_COMMAND)
        # From here on the client's bytes are the supervisor's: nothing reads them here.
        await self.registry.adopt(session, conn.sock, request)
        conn.handed_over = True
        logger.info("pid %d: %s of session %s handed to its supervisor", conn.peer_pid,
                    request.TAG, session.name)
        return protocol.ok()

    async def kill(self, _conn: Connection | None, command: protocol.Kill) -> Message:
        force = bool(command.force)
        targets = (list(self.registry) if command.all
                   else [self.registry.find(command.session, unique=True)])
        await asyncio.gather(*(self.registry.kill(s, force=force, grace=5.0) for s in targets))
        for session in targets:
            logger.info("session %s killed%s", session.name, " (forced)" if force else "")
        return encode(protocol.KillReply(killed=[s.name for s in targets]))

    async def restart(self, _conn: Connection | None, command: protocol.Restart) -> Message:
        session = self.registry.find(command.session, unique=True)
        await self.registry.command(session, protocol.SupervisorRestart(), protocol.PtyReply)
        return encode(protocol.RestartReply(name=session.name))

    async def close_pty(self, _conn: Connection | None, command: protocol.ClosePty) -> Message:
        session = self.registry.find(command.session, unique=True)
        await self.registry.command(session, protocol.SupervisorClose(pty=command.pty),
                                    protocol.Ok)
        logger.info("session %s: pty %d closed", session.name, command.pty)
        return protocol.ok()
