"""The host side of a session sandbox: start it, spawn into it, signal, stop (SPEC 4).

Start-up (S = the calling process, e.g. the session supervisor)::

    S --clone(NEWUSER|NEWNS|NEWPID|NEWUTS|NEWIPC[|NEWNET])--> I = PID 1
      S: id maps, "mapped"                                   (prepare_init; may run ahead)
      I: uid 0, exec coop-init: signalfd, loopback up, private propagation  } in parallel
      S: session dirs, network.attach(I), "setup", the mount records  }
      I: hostname, overlay, /proc, /dev, ...                          } in parallel
      S: persist dirs, /etc files, then their bind records            }
      I: persist and /etc binds, "pivot": pivot_root, bounding set, "ready"

The overlay's records carry their directories as descriptors S opens (``mountfds``),
and so do root's binds: I is uid 0 of its namespace, which for root is coop's
unprivileged id range (``idmap``) that may not walk root's directories; root's
workspace comes as an idmapped mount, so that root's files there stay the sandbox's
root's.

``start()`` clones the *current* process, never starting an interpreter (that is what
keeps a start near the 5 ms floor, FIELD-NOTES); one clone with namespace flags replaces
fork + unshare + fork. ``prepare_init()`` (``sandbox.clone``) does the first two lines,
possibly before the sandbox is known (a session starter's spare keeps one waiting:
``Sandbox(config, prepared=...)``).
The caller should be single-threaded at the clone: as with any fork, locks other
threads hold are copied held (the child only makes syscalls and never takes those locks,
so spawns fired from other threads are safe in practice). I is S's child: S reaps it in
``stop()``. If S dies, I loses its control socket and ends the sandbox by itself
(2 s, ``coop-init``); the next start's ``reap_stale`` removes the files.

Every process in the sandbox after "ready" is a child of I, started on request over the
control socket, so no process can start on the host side: a spawn racing start-up waits
for "ready" (or fails), one racing teardown gets ``SandboxError``.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import select
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coop_build.errors import CoopBuildError
from coop_build.hostlayer import HostLayout, host_layout, layer_lowers
from coop_build.idmap import choose_idmap
from coop_build.namespace import hand_over
from coop_build.paths import CoopPaths
from coop_build.rootlayout import DEFAULT_PATH, host_secrets
from coop_run.errors import BindPathError, CoopError, InitProtocolError, SandboxError
from coop_run.layout import SessionDir, check_session_name
from coop_run.procs import proc_start_time
from coop_run.sandbox import caps, initproto, sessiondirs
from coop_run.sandbox.channel import InitChannel
from coop_run.sandbox.clone import PreparedInit, prepare_init
from coop_run.sandbox.config import SandboxConfig
from coop_run.sandbox.mountfds import MountFds, close_all
from coop_run.sandbox.mounts import (
    HostLayer,
    MountSpec,
    hidden_targets,
    plan_mounts,
    plan_records,
    split_plan,
)
from coop_run.sandbox.network.base import NetworkMode
from coop_run.sandbox.network.none import NoNetwork
from coop_run.statefiles import read_json, write_json_atomic

logger = logging.getLogger(__name__)

DEFAULT_TERM = "xterm-256color"
START_TIMEOUT = 10.0
REQUEST_TIMEOUT = 10.0
KILL_WAIT = 5.0
CHANNEL_WAIT = 5.0  # for a reader to give the channel up; at once when the init is gone
_PEER_GONE = frozenset({errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN})


@dataclass(frozen=True)
class Spawned:
    """A process started in the sandbox."""

    pid: int                    # as seen inside
    host_pid: int | None        # as seen by the caller (None if the kernel did not say)
    master_fd: int | None       # PTY master (the caller's to close), when pty was asked
    pts: str | None             # /dev/pts/N inside


@dataclass(frozen=True)
class ExitStatus:
    code: int | None
    signal: int | None

    @property
    def returncode(self) -> int:
        """subprocess-style: the exit code, or minus the signal."""
        return self.code if self.code is not None else -(self.signal or 0)


def base_env(config: SandboxConfig, workspace_real: Path, created: int) -> dict[str, str]:
    """The environment every process in the sandbox starts with (SPEC 4.4)."""
    env = {"PATH": DEFAULT_PATH, "TERM": DEFAULT_TERM}
    env.update(config.env)
    env.update(forced_env(config, workspace_real, created))
    return env


def forced_env(config: SandboxConfig, workspace_real: Path, created: int) -> dict[str, str]:
    """Variables no Coopfile or client may override (sessions are found by them)."""
    return {
        "HOME": config.home,
        "COOP_SESSION": config.name,
        "COOP_WORKSPACE": str(workspace_real),
        "COOP_CREATED": str(created),
    }


def child_capabilities(network: NetworkMode, *, host_root_files: bool = False) -> frozenset[int]:
    """What processes inside may hold: ``caps.KEEP``, less CAP_NET_RAW unless the network
    mode says raw sockets cannot get around its filter (``net_raw_safe``), less
    CAP_SETFCAP where the sandbox's root writes as host root (``host_root_files``: root's
    idmapped workspace).

    A mode that filters inside the sandbox's own netns (rootless veth: nft output hook)
    is bypassed by a packet socket on its interface, which that netns's root may open
    with CAP_NET_RAW: a hand-made SYN to the LAN went straight out through pasta. A file
    capability set through root's workspace is stored for host root (the mount maps the
    sandbox's root to it), so it would take effect on the host: ``setcap
    cap_setuid+ep`` there made a binary any host user could become root with.
    """
    kept = caps.KEEP if network.net_raw_safe else caps.KEEP - {caps.CAP_NET_RAW}
    return kept - {caps.CAP_SETFCAP} if host_root_files else kept


def hosts_file(name: str) -> str:
    return (f"127.0.0.1\tlocalhost\n127.0.1.1\t{name}\n"
            "::1\tlocalhost ip6-localhost ip6-loopback\n")


class Sandbox:
    """One sandbox: ``start()``, then ``spawn()``/``signal()``/``wait()``, then ``stop()``.

    Thread-safe after ``start()`` begins: any thread may spawn, and a spawn issued while
    starting waits for "ready".
    """

    def __init__(self, config: SandboxConfig, *, prepared: PreparedInit | None = None) -> None:
        """``prepared``: an init cloned ahead by this process (``prepare_init``); used if
        it has the namespaces and id maps this sandbox needs, else discarded."""
        check_session_name(config.name)
        self.config = config
        self._prepared = prepared
        self.sdir = SessionDir(config.session_dir)
        self.idmap = config.idmap or choose_idmap()
        self.network: NetworkMode = config.network or NoNetwork()
        self.created = config.created if config.created is not None else int(time.time())
        self.workspace_real = config.workspace
        self.env: dict[str, str] = {}
        # new -> starting -> launched (init exists, setting up) -> running -> stopping -> stopped
        self.state = "new"
        self.init_pid: int | None = None      # host pid of PID 1
        self.failure: str | None = None
        self._pidfd: int | None = None
        # One lock for the state above and the channel's: its events change that state.
        self._cond = threading.Condition()
        self._channel = InitChannel(config.name, self._cond, self._on_event)
        self._ready = False
        self._exits: dict[int, ExitStatus] = {}
        self._abandoned: set[int] = set()  # processes nobody serves: their exits are dropped
        # Called as on_exit(pid inside, status) by whichever thread reads the channel,
        # with an internal lock held: keep it short (e.g. hand over to an event loop).
        self.on_exit: Callable[[int, ExitStatus], None] | None = None
        self._owns_dir = False
        self.resolv = ""

    @classmethod
    def create(cls, config: SandboxConfig) -> Sandbox:
        """A started sandbox."""
        sandbox = cls(config)
        sandbox.start()
        return sandbox

    # --- start ------------------------------------------------------------------------

    def start(self, *, wait_ready: bool = True) -> None:
        """Build the namespaces and root; returns once the init is "ready".

        ``wait_ready=False`` returns as soon as the init exists and is setting its root
        up: a ``spawn()`` right after is then sent at once and run the moment the init
        is ready (a session start pipelines its agent this way). A failure in the init's
        set-up then surfaces from that ``spawn()``; call ``stop()`` to clean up.
        """
        with self._cond:
            if self.state != "new":
                raise SandboxError(f"sandbox {self.config.name} was already started")
            self.state = "starting"
        try:
            self._start(wait_ready)
        except BaseException as exc:
            self._collect_failure()
            told = None  # the init's own account, if it gave one, of what our error is about
            if isinstance(exc, Exception) and not isinstance(exc, SandboxError):
                told = self.failure
            if told is not None:
                message = told
            elif isinstance(exc, SandboxError | CoopBuildError):
                message = exc.message
            else:
                message = str(exc)
            with self._cond:
                self.failure = message
                self.state = "stopping"
                self._cond.notify_all()
            self._teardown(force=True, grace=0)
            if isinstance(exc, SandboxError):
                raise
            if told is not None:  # e.g. ECONNRESET on a record sent after the init failed
                raise SandboxError(told) from exc
            if isinstance(exc, CoopBuildError | OSError):
                raise SandboxError(f"cannot start sandbox {self.config.name}: {message}") from exc
            raise
        with self._cond:
            if self._ready and self.state == "launched":
                self.state = "running"
            self._cond.notify_all()

    def _prepare(self) -> tuple[MountSpec, dict[str, Any]]:
        config = self.config
        sdir = self.sdir
        self.resolv = self.network.resolv_conf()
        made = not sdir.path.exists()
        sdir.path.mkdir(parents=True, exist_ok=True)
        try:
            state, persist, layers = self._claim(sdir)
        except BaseException:
            if made:  # a refused start leaves no directory behind
                sdir.lock.unlink(missing_ok=True)
                with contextlib.suppress(OSError):
                    sdir.path.rmdir()
            raise
        self._owns_dir = True
        sessiondirs.clean_leftovers(sdir, self.idmap)
        host = host_layout() if config.host_image else HostLayout((), ())
        sessiondirs.ensure_dirs(sdir, idmap=self.idmap, blank=config.host_image)
        real = SessionDir(sdir.path.resolve())
        if not layers:
            sdir.lower.mkdir()
            layers = [sdir.lower]
        lowers = tuple(str(p.resolve()) for p in layers)
        persist_binds = tuple((str(real.persist / name), f"{config.home.rstrip('/')}/{name}")
                              for name in persist)
        readonly = tuple((source, inside, "dir" if is_dir else "file")
                         for source, inside, is_dir in config.readonly_binds)
        spec = MountSpec(
            root=str(real.root),
            lowers=lowers,
            upper=str(real.upper),
            work=str(real.work),
            host_image=config.host_image,
            host_layers=tuple(
                HostLayer(rel, layer_lowers(rel, lowers), str(real.host / f"upper{index}"),
                          str(real.host / f"work{index}"))
                for index, rel in enumerate(host.dirs)),
            host_links=tuple(name for name, _ in host.links),
            workspace=str(self.workspace_real),
            workspace_inside=config.workspace_inside,
            persist=persist_binds,
            hidden=hidden_targets([os.path.realpath(p) for p in config.hide],
                                  [(str(self.workspace_real), config.workspace_inside),
                                   *persist_binds, *((s, i) for s, i, _ in readonly)]),
            readonly_binds=readonly,
            etc_files=tuple((str(real.etc / n), f"/etc/{n}")
                            for n in ("hostname", "hosts", "resolv.conf")),
            secrets=tuple((f"/{rel}", is_dir) for rel, is_dir in host_secrets())
            if config.host_image else (),
            blank=str(real.etc / sessiondirs.BLANK) if config.host_image else None,
            # Root's sandbox is coop's id range: the workspace's owners must show through
            # its map, or root's own files there would be nobody's inside.
            idmapped_workspace=self.idmap.owner != (os.geteuid(), os.getegid()),
        )
        return spec, state

    def _claim(self, sdir: SessionDir
               ) -> tuple[dict[str, Any], list[str], list[Path]]:
        """Check the start and record it as ours: (state, persist names, layer dirs).

        Claimed from reading the state to writing ours (which then names a live owner):
        a reaper, or a start of the same name, never acts on it in between.
        """
        config = self.config
        with sessiondirs.claimed(sdir):
            try:
                existing = read_json(sdir.sandbox_state, strict=True)
            except OSError as exc:  # never overwrite a record we could not read
                raise SandboxError(f"cannot read {sdir.sandbox_state}: "
                                   f"{exc.strerror or exc}") from exc
            if existing is not None and sessiondirs.state_owner_alive(existing):
                raise SandboxError(f"session {config.name} already has a running sandbox",
                                   code="SESSION_EXISTS")
            self.workspace_real = sessiondirs.check_resolved(config.workspace, "the workspace")
            persist = []
            for name in config.persist:
                if not sessiondirs.persist_name_ok(name):
                    raise SandboxError(
                        f"persist entry {name!r} must be a relative path below $HOME")
                persist.append(name)
            layers = [Path(p) for p in config.layers]
            for layer in layers:
                if not layer.is_dir():
                    raise SandboxError(f"layer directory does not exist: {layer}",
                                       code="ROOTFS_NOT_BUILT")
            creator = {"pid": os.getpid(), "start": proc_start_time(os.getpid())}
            state: dict[str, Any] = {"name": config.name, "creator": creator,
                                     "idmap": sessiondirs.idmap_to_state(self.idmap),
                                     "created": self.created}
            # Before anything else: reap_stale finds it.
            write_json_atomic(sdir.sandbox_state, state)
        return state, persist, layers

    def _coop_homes(self) -> list[Path]:
        """The coop directories no workspace may be in (``layout.refused_mount``): those
        the config hides (the daemon's ``COOP_HOME``) and this session's own."""
        return [*self.config.hide, self.sdir.path]

    def _reap_others(self) -> None:
        sessions = self.sdir.path.parent
        try:
            if sessions.name == "sessions":  # the usual layout: COOP_HOME/sessions/NAME
                sessiondirs.reap_stale(CoopPaths(sessions.parent))
            else:
                sessiondirs.reap_stale_in(sessions)
        except (CoopError, CoopBuildError, OSError) as exc:  # never fails a start
            logger.warning("cleaning up after dead sessions failed: %s", exc)

    def _finish_dirs(self, spec: MountSpec) -> None:
        """What the init needs only after the id maps: done while it sets up (2 cores)."""
        sdir = self.sdir
        if spec.host_layers:  # a slow disk takes 1 ms or more for these
            sessiondirs.ensure_host_dirs(sdir, len(spec.host_layers), self.idmap)
        home = self.config.user_home or Path(os.environ.get("HOME", "/"))
        for source, _inside in spec.persist:
            path = Path(source)
            path.mkdir(parents=True, exist_ok=True)
            real = sessiondirs.check_bind_source(path, home=home, workspace=self.workspace_real,
                                                 allowed=(sdir.persist,))
            if real != path:
                raise BindPathError(f"refusing to bind {path} (-> {real}): not a plain directory")
            sessiondirs.give_persist(path, self.idmap)
        for name, text in (("hostname", self.config.name + "\n"),
                           ("hosts", hosts_file(self.config.name)), ("resolv.conf", self.resolv)):
            (sdir.etc / name).write_text(text)
            hand_over([sdir.etc / name], self.idmap)

    def _start(self, wait_ready: bool) -> None:
        # The init first: its own set-up overlaps ours (2 cores), and a failure below
        # ends it through the teardown like any started init.
        prepared, self._prepared = self._prepared, None
        if prepared is not None and (prepared.unshare_net != self.network.unshare_net
                                     or prepared.idmap != self.idmap):
            prepared.discard()  # a spare's init made for other namespaces (mode "host")
            prepared = None
        if prepared is None:
            prepared = prepare_init(self.idmap, unshare_net=self.network.unshare_net)
        self._channel.open(prepared.sock)
        self._pidfd, self.init_pid = prepared.pidfd, prepared.pid
        pid = prepared.pid
        spec, state = self._prepare()
        try:
            plan = plan_mounts(spec)
        except ValueError as exc:
            raise SandboxError(str(exc)) from exc
        self.env = base_env(self.config, self.workspace_real, self.created)
        late_sources = [*(source for source, _ in (*spec.persist, *spec.etc_files)),
                        *(layer.upper for layer in spec.host_layers)]
        first, late = split_plan(plan, late_sources)
        # The init has its namespaces and ids. It builds the root as the records come,
        # while we write what its last binds need; nothing runs inside before the
        # network is attached. Closing the socket instead makes it exit.
        self.network.attach(pid)
        setup = {"op": "setup", "hostname": self.config.name,
                 "child_caps": sorted(child_capabilities(
                     self.network, host_root_files=spec.idmapped_workspace))}
        # Only root's sandbox (an idmapped workspace) is an id range that cannot walk them.
        mount_fds = MountFds(pid, binds_by_path=not spec.idmapped_workspace,
                             owner=self.idmap.owner)
        try:
            # Opened once, checked from its descriptor, mounted from it: never walked again.
            mount_fds.open_workspace(str(self.workspace_real), self._coop_homes(),
                                     idmapped=spec.idmapped_workspace)
            for record in (setup, *plan_records(first)):
                self._send_setup(record, mount_fds)
            self._finish_dirs(spec)
            for record in plan_records(late):
                self._send_setup(record, mount_fds)
        except OSError as exc:
            if exc.errno not in _PEER_GONE:
                raise
            # The init has ended: its set-up failed and it said why before it went. The
            # caller hears that from the wait for "ready", or from its first request.
            logger.info("sandbox %s: the init went during set-up (%s)", self.config.name,
                        exc.strerror)
        finally:
            mount_fds.close()
        # While the init finishes its root: the record naming it, and other sessions'
        # leftovers (ours is recorded alive, so it is left alone).
        state["init"] = {"pid": pid, "start": proc_start_time(pid)}
        write_json_atomic(self.sdir.sandbox_state, state)
        with self._cond:
            self.state = "launched"  # requests may be sent now; the init serves them when ready
            self._cond.notify_all()
        self._reap_others()
        if wait_ready:
            deadline = time.monotonic() + START_TIMEOUT
            self._channel.wait_for(lambda: True if self._ready else None, deadline,
                                   "the sandbox to start", self._check_failure)

    def _send_setup(self, record: dict[str, Any], mount_fds: MountFds) -> None:
        """One set-up record with the descriptors of its host paths (``mountfds``)."""
        try:
            fds = mount_fds.for_record(record)
        except SandboxError:
            # An init that has gone has no paths to open: then this is a send to it, and
            # what it said before it went is the failure (as for a send that finds it gone).
            self._collect_failure()
            if self.failure is None:
                raise
            raise BrokenPipeError(errno.EPIPE, "the sandbox's init has gone") from None
        if fds is None:
            return  # an optional bind of nothing
        try:
            self._channel.send(record, fds)
        finally:
            close_all(fds)

    # --- the control channel (``channel.InitChannel``) --------------------------------

    def _on_event(self, received: initproto.Received) -> None:
        """An event from the init; called by the channel with ``_cond`` held."""
        message = received.message
        op = message.get("op")
        if op == "ready":
            self._ready = True
            if self.state == "launched":
                self.state = "running"
        elif op == "failed":
            self.failure = str(message.get("message"))
        elif op == "exited":
            pid = message.get("pid")
            status = ExitStatus(code=message.get("code"), signal=message.get("signal"))
            if isinstance(pid, int) and pid in self._abandoned:
                self._abandoned.discard(pid)
            elif isinstance(pid, int):
                self._exits[pid] = status
                if self.on_exit is not None:
                    self.on_exit(pid, status)
        elif op == "spawned":  # a reply whose waiter gave up: nobody serves that process
            pid = message.get("pid")
            if isinstance(pid, int):
                self._abandon(pid)

    def _check_failure(self) -> None:
        """For the channel's waits (``_cond`` held): the init's set-up failed."""
        if self.failure is not None:
            raise SandboxError(self.failure)

    def _collect_failure(self) -> None:
        """After a failed start or send: the init's own account of why, if it sent one."""
        if self.failure is None:
            self._channel.drain(CHANNEL_WAIT)

    def _request(self, message: dict[str, Any], fds: Sequence[int] = (),
                 timeout: float = REQUEST_TIMEOUT) -> initproto.Received:
        deadline = time.monotonic() + timeout
        with self._cond:
            while self.state in ("new", "starting") and self.failure is None:
                if not self._cond.wait(max(0.0, deadline - time.monotonic())):
                    raise SandboxError("timed out waiting for the sandbox to start",
                                       code="SANDBOX_TIMEOUT")
            if self.state not in ("launched", "running"):
                raise SandboxError(f"sandbox {self.config.name} is {self.state}",
                                   code="SANDBOX_STOPPED")
            if self._channel.closed:
                raise SandboxError(f"sandbox {self.config.name} has stopped",
                                   code="SANDBOX_STOPPED")
        rid = self._channel.next_id()
        message = {**message, "id": rid}
        try:
            self._channel.send(message, fds)
        except OSError as exc:
            if exc.errno not in _PEER_GONE and not self._channel.closed:  # (not by a stop)
                # The init is there: this message could not go (its size, descriptors).
                raise SandboxError(f"cannot send {message['op']} to sandbox "
                                   f"{self.config.name}: {exc.strerror}") from exc
            self._collect_failure()  # an init whose set-up failed said why before it went
            if self.failure is not None:
                raise SandboxError(self.failure) from exc
            raise SandboxError(f"sandbox {self.config.name} is gone: {exc.strerror}",
                               code="SANDBOX_STOPPED") from exc
        reply = self._channel.reply(rid, deadline, f"the sandbox to answer {message['op']}",
                                    self._check_failure)
        if reply.message.get("op") == "error":
            for fd in reply.fds:
                os.close(fd)
            raise SandboxError(str(reply.message.get("message")))
        return reply

    # --- public operations --------------------------------------------------------------

    def spawn(self, argv: Sequence[str], *, env: Mapping[str, str] | None = None,
              cwd: str | None = None, pty: bool = False, cols: int = 80, rows: int = 24,
              stdio: tuple[int, int, int] | None = None,
              timeout: float = REQUEST_TIMEOUT) -> Spawned:
        """Start ``argv`` inside (PATH lookup inside). ``env`` adds to the session's env
        (HOME and COOP_* cannot be changed); ``cwd`` defaults to the workspace;
        ``stdio`` passes three descriptors for a process without a PTY."""
        if pty and stdio is not None:
            raise SandboxError("spawn: a PTY process gets no stdio descriptors")
        with self._cond:
            full_env = {**self.env, **(env or {})}
        full_env.update(forced_env(self.config, self.workspace_real, self.created))
        message: dict[str, Any] = {
            "op": "spawn", "argv": list(argv), "env": full_env,
            "cwd": cwd or self.config.workspace_inside, "pty": pty, "cols": cols,
            "rows": rows, "stdio": 3 if stdio is not None else 0,
        }
        try:
            initproto.check_spawn(message)
        except InitProtocolError as exc:
            raise SandboxError(str(exc)) from exc
        reply = self._request(message, stdio or (), timeout)
        master = reply.fds[0] if pty and reply.fds else None
        for fd in reply.fds[1:] if pty else reply.fds:
            os.close(fd)
        host_pid = reply.cred_pid
        return Spawned(pid=int(reply.message["pid"]),
                       host_pid=host_pid if host_pid and host_pid != self.init_pid else None,
                       master_fd=master, pts=reply.message.get("pts"))

    def signal(self, pid: int, signo: int) -> None:
        """Send ``signo`` to ``pid`` (as seen inside)."""
        self._request({"op": "signal", "pid": pid, "signo": signo})

    def wait(self, pid: int, timeout: float | None = None) -> ExitStatus:
        """Block until process ``pid`` (inside) exits; its status (consumed: a second
        wait for the same pid blocks)."""
        deadline = time.monotonic() + (timeout if timeout is not None else 1e9)
        return self._channel.wait_for(lambda: self._exits.pop(pid, None), deadline,
                                      f"process {pid} to exit", self._check_failure)

    @property
    def control_fd(self) -> int | None:
        """The control socket, for an event loop to watch (then call ``pump()``)."""
        sock = self._channel.sock
        return sock.fileno() if sock is not None else None

    def pump(self) -> None:
        """Read every message already waiting, without blocking (``on_exit`` fires for
        exits). A no-op while another thread is reading."""
        self._channel.pump()

    def poll_exit(self, pid: int) -> ExitStatus | None:
        """The exit status of ``pid`` if its ``exited`` event has been read."""
        with self._cond:
            return self._exits.get(pid)

    def abandon(self, pid: int) -> None:
        """Nobody serves process ``pid`` (its spawn's caller gave up): its exit, recorded
        or to come, is dropped, so that a later process given the same pid is not taken
        for exited."""
        with self._cond:
            self._abandon(pid)

    def _abandon(self, pid: int) -> None:
        if self._exits.pop(pid, None) is None:
            self._abandoned.add(pid)

    def take_exit(self, pid: int) -> ExitStatus | None:
        """Like ``poll_exit``, and forgotten from then on (``wait`` consumes it the same
        way): a caller that hears of exits through ``on_exit`` takes each one it handles,
        so that a later process given the same pid is not taken for exited."""
        with self._cond:
            return self._exits.pop(pid, None)

    @property
    def alive(self) -> bool:
        """The init is still running."""
        if self._pidfd is None:
            return False
        return not select.select([self._pidfd], [], [], 0)[0]

    # --- stop ---------------------------------------------------------------------------

    def stop(self, grace: float = 5.0, force: bool = False) -> None:
        """End every process inside (SIGTERM, ``grace`` seconds, SIGKILL; ``force``: kill
        at once), close the network, remove upper/ and work/; persist/ stays."""
        with self._cond:
            if self.state in ("stopped", "new"):
                return
            if self.state == "stopping":
                raise SandboxError(f"sandbox {self.config.name} is already stopping")
            self.state = "stopping"
            self._cond.notify_all()
        self._teardown(force=force, grace=grace)

    def _teardown(self, *, force: bool, grace: float) -> None:
        try:
            self._end_init(force=force, grace=grace)
        finally:
            try:
                self.network.close()
            finally:
                self._drain_and_close()
                with self._cond:
                    if self._pidfd is not None:
                        os.close(self._pidfd)
                        self._pidfd = None
                    self.state = "stopped"
                    self._cond.notify_all()
                if self._owns_dir:
                    sessiondirs.clean_transient(self.sdir, self.idmap)

    def _drain_and_close(self) -> None:
        """Read what the init said before it ended, then close the channel.

        A spawn racing the stop may have been carried out: its reply sits in the socket
        behind us. Filing it first means a caller told "stopped" can rely on its
        process never having started."""
        self._channel.close(wait=CHANNEL_WAIT, drain=lambda: not self.alive)

    def _end_init(self, *, force: bool, grace: float) -> None:
        pidfd = self._pidfd
        if pidfd is None:
            return
        if not force and not self._channel.closed:
            with contextlib.suppress(OSError):
                self._channel.send({"op": "shutdown", "id": 0, "grace": grace})
            if select.select([pidfd], [], [], grace + 1.0)[0]:
                self._reap_init()
                return
        with contextlib.suppress(ProcessLookupError):
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        if not select.select([pidfd], [], [], KILL_WAIT)[0]:
            raise SandboxError(f"sandbox init {self.init_pid} did not die after SIGKILL")
        self._reap_init()

    def _reap_init(self) -> None:
        """Reap I if it was re-parented to us (we are a subreaper); else init does."""
        if self.init_pid is not None:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self.init_pid, os.WNOHANG)

    def __enter__(self) -> Sandbox:
        if self.state == "new":
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop(grace=1.0)
