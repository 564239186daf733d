"""PID 1 of a sandbox: builds the root, then reaps, forwards signals and spawns on request.

The init is a clone of the supervisor's Python process (never a new interpreter:
starting one costs more than the whole sandbox start). After ``pivot_root`` the host's
filesystem is gone, so everything this module uses is imported at the top and resolved
before the pivot (libc functions, ``caps``, ``initproto``). Children are started with
``posix_spawn`` (vfork + exec), so a spawn never copies this process's page tables.

It answers requests on its end of the control socketpair (see ``initproto``). Every
process in the sandbox after "ready" is its child, so nothing can start outside. Signals:
SIGTERM/SIGINT/SIGHUP sent from *outside* the PID namespace (the kernel reports sender
pid 0 then) go to every process inside; the same signals sent from inside are ignored,
so the agent cannot take the namespace down by signalling PID 1. When the control socket
closes (the supervisor died), the init ends the sandbox after ``ORPHAN_GRACE`` seconds: no
one could ever talk to it again, and ``sessiondirs.reap_stale`` then removes its files.
"""

# str paths inside the sandbox, on purpose.
# ruff: noqa: PTH112, PTH118

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import fcntl
import os
import select
import signal
import socket
import struct
import termios
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from coop_build.rootlayout import DEFAULT_PATH
from coop_run import caps, initproto, rootfs_mounts
from coop_run.initproto import ProtocolError, ShutdownRequest, SignalRequest, SpawnRequest

ORPHAN_GRACE = 2.0
SETUP_FAILED = 125
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
HANDLED = (signal.SIGCHLD, *FORWARDED)

DEFAULTED = (signal.SIGPIPE, signal.SIGXFSZ)  # Python ignores these; exec would keep that
TIOCGPTN = 0x80045430
TIOCSPTLCK = 0x40045431
_SIGINFO_SIZE = 128
_SFD_CLOEXEC = os.O_CLOEXEC
_SFD_NONBLOCK = os.O_NONBLOCK

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_signalfd = _libc.signalfd
_signalfd.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_int)


@dataclass(frozen=True)
class InitSpec:
    """What the init builds its root from (``setup_spec``)."""

    early: Sequence[rootfs_mounts.Op]   # before the overlay (creates no files)
    middle: Sequence[rootfs_mounts.Op]  # with the maps: overlay, /proc, /dev, ...
    late: Sequence[rootfs_mounts.Op]    # binds of files the supervisor writes meanwhile
    root: str                           # host dir the overlay is mounted on
    child_caps: frozenset[int] = caps.KEEP  # the most any process started inside may hold


def _signalfd_for(signals: Sequence[int]) -> int:
    bits = 0
    for sig in signals:
        bits |= 1 << (sig - 1)
    mask = struct.pack("<Q", bits).ljust(128, b"\0")
    fd = int(_signalfd(-1, mask, _SFD_CLOEXEC | _SFD_NONBLOCK))
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"signalfd: {os.strerror(err)}")
    return fd


def loopback_up() -> None:
    """Set IFF_UP on ``lo`` of our network namespace (SIOCGIFFLAGS/SIOCSIFFLAGS)."""
    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        req = struct.pack("16sh", b"lo", 0).ljust(40, b"\0")
        res = fcntl.ioctl(sock.fileno(), siocgifflags, req)
        flags = struct.unpack_from("16sh", res)[1]
        fcntl.ioctl(sock.fileno(), siocsifflags,
                    struct.pack("16sh", b"lo", flags | iff_up).ljust(40, b"\0"))


class Init:
    """The state of PID 1: its children, the control socket, the shutdown deadline."""

    def __init__(self, sock: socket.socket, sigfd: int) -> None:
        self.sock = sock
        self.sigfd = sigfd
        self.spawned: set[int] = set()
        self.deadline: float | None = None
        self.connected = True

    # --- sending ----------------------------------------------------------------------

    def send(self, message: dict[str, Any], fds: tuple[int, ...] = (),
             cred_pid: int | None = None) -> None:
        if not self.connected:
            return
        try:
            initproto.send(self.sock, message, fds, cred_pid)
        except OSError:
            self.connected = False
            self.begin_shutdown(ORPHAN_GRACE)

    # --- the loop ---------------------------------------------------------------------

    def run(self) -> NoReturn:
        while True:
            timeout = None
            if self.deadline is not None:
                if not self.has_children():
                    os._exit(0)
                timeout = max(0.0, self.deadline - time.monotonic())
                if timeout == 0:
                    with contextlib.suppress(OSError):
                        os.kill(-1, signal.SIGKILL)
                    os._exit(0)  # the kernel kills and reaps whatever is left
            watch = [self.sigfd, self.sock.fileno()] if self.connected else [self.sigfd]
            try:
                ready, _, _ = select.select(watch, [], [], timeout)
            except InterruptedError:
                continue
            if self.sigfd in ready:
                self.on_signals()
            if self.connected and self.sock.fileno() in ready:
                self.on_request()

    def has_children(self) -> bool:
        self.reap()
        try:  # WNOWAIT: look without reaping, so no exit goes unreported
            os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return False
        return True

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid in self.spawned:
                self.spawned.discard(pid)
                self.send(initproto.exited_event(pid, status))

    def on_signals(self) -> None:
        while True:
            try:
                raw = os.read(self.sigfd, _SIGINFO_SIZE * 8)
            except BlockingIOError:
                break
            for offset in range(0, len(raw) - _SIGINFO_SIZE + 1, _SIGINFO_SIZE):
                signo, _err, _code, sender = struct.unpack_from("<IiiI", raw, offset)
                if signo in FORWARDED and sender == 0:  # from outside our PID namespace
                    with contextlib.suppress(OSError):
                        os.kill(-1, signo)
        self.reap()

    def begin_shutdown(self, grace: float) -> None:
        if self.deadline is None:
            self.deadline = time.monotonic() + grace
            with contextlib.suppress(OSError):
                os.kill(-1, signal.SIGTERM)
        else:
            self.deadline = min(self.deadline, time.monotonic() + grace)

    def on_request(self) -> None:
        try:
            received = initproto.recv(self.sock)
        except ProtocolError as exc:
            self.send({"op": "error", "id": None, "message": str(exc)})
            return
        except OSError:
            received = None
        if received is None:
            self.connected = False
            self.begin_shutdown(ORPHAN_GRACE)
            return
        try:
            self.handle(received)
        finally:
            for fd in received.fds:
                with contextlib.suppress(OSError):
                    os.close(fd)

    def handle(self, received: initproto.Received) -> None:
        raw_id = received.message.get("id")
        try:
            request = initproto.parse_request(received.message)
        except ProtocolError as exc:
            self.send({"op": "error", "id": raw_id, "message": str(exc)})
            return
        if isinstance(request, ShutdownRequest):
            self.send({"op": "ok", "id": request.id})
            self.begin_shutdown(request.grace)
        elif self.deadline is not None:
            self.send({"op": "error", "id": request.id,
                       "message": "the sandbox is shutting down"})
        elif isinstance(request, SignalRequest):
            self.signal(request)
        else:
            self.spawn(request, received.fds)

    def signal(self, request: SignalRequest) -> None:
        if request.pid <= 1:
            self.send({"op": "error", "id": request.id, "message": "cannot signal the init"})
            return
        try:
            os.kill(request.pid, request.signo)
        except OSError as exc:
            self.send({"op": "error", "id": request.id,
                       "message": f"kill {request.pid}: {exc.strerror}"})
            return
        self.send({"op": "ok", "id": request.id})

    # --- spawning ---------------------------------------------------------------------

    def spawn(self, request: SpawnRequest, fds: list[int]) -> None:
        """posix_spawn (vfork + exec: no copy of this big process's page tables)."""
        if len(fds) != request.stdio:
            self.send({"op": "error", "id": request.id,
                       "message": f"spawn: {len(fds)} descriptors sent, {request.stdio} declared"})
            return
        master = -1
        pts = ""
        step = f"run {request.argv[0]}"
        try:
            path = find_program(request.argv[0], request.env.get("PATH", DEFAULT_PATH))
            if request.pty:
                step = "open a PTY"
                master, pts = open_pty(request.cols, request.rows)
            cwd = request.cwd or "/"
            step = f"change to {cwd}"
            os.chdir(cwd)  # posix_spawn has no chdir action in 3.11: the init moves
            try:
                step = f"run {request.argv[0]}"
                pid = os.posix_spawn(path, list(request.argv), request.env,
                                     file_actions=stdio_actions(pts, fds), setsid=True,
                                     setsigmask=(), setsigdef=DEFAULTED)
            finally:
                os.chdir("/")
        except OSError as exc:
            if master >= 0:
                os.close(master)
            self.send({"op": "error", "id": request.id,
                       "message": f"cannot {step}: {exc.strerror or exc}"})
            return
        self.spawned.add(pid)
        reply = {"op": "spawned", "id": request.id, "pid": pid, "pts": pts or None}
        self.send(reply, (master,) if master >= 0 else (), cred_pid=pid)
        if master >= 0:
            os.close(master)


def find_program(name: str, path: str) -> str:
    """``name`` looked up in ``path`` inside the sandbox (posix_spawnp would use the
    init's own PATH, which is the host's)."""
    if "/" in name:
        return name
    for directory in path.split(":"):
        candidate = os.path.join(directory or ".", name)
        if os.access(candidate, os.X_OK) and not os.path.isdir(candidate):
            return candidate
    raise OSError(errno.ENOENT, "not found in PATH")


def stdio_actions(pts: str, fds: Sequence[int]) -> list[tuple[Any, ...]]:
    """File actions giving the child its terminal, the passed descriptors, or /dev/null.

    Opening the PTY slave after setsid (which posix_spawn does first) without O_NOCTTY
    makes it the child's controlling terminal.
    """
    if pts or not fds:
        first = (os.POSIX_SPAWN_OPEN, 0, pts or "/dev/null", os.O_RDWR, 0)
        return [first, (os.POSIX_SPAWN_DUP2, 0, 1), (os.POSIX_SPAWN_DUP2, 0, 2)]
    actions: list[tuple[Any, ...]] = [(os.POSIX_SPAWN_DUP2, fd, target)
                                      for target, fd in enumerate(fds)]
    actions += [(os.POSIX_SPAWN_CLOSE, fd) for fd in sorted(set(fds)) if fd > 2]
    return actions


def open_pty(cols: int, rows: int) -> tuple[int, str]:
    """A PTY pair from the sandbox's own devpts: (master fd, slave path inside)."""
    master = os.open("/dev/ptmx", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        fcntl.ioctl(master, TIOCSPTLCK, struct.pack("i", 0))
        number = struct.unpack("I", fcntl.ioctl(master, TIOCGPTN, b"\0\0\0\0"))[0]
        fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    except OSError:
        os.close(master)
        raise
    return master, f"/dev/pts/{number}"


def init_base(net_lo_up: bool) -> int:
    """What PID 1 does before it knows its sandbox; returns the signalfd.

    Own session, quiet stdio, signals by signalfd, loopback, private mount propagation:
    all of it needs only the capabilities the clone granted. A spare's init (cloned
    ahead of any request) then waits for ``setup_spec``'s message.
    """
    os.setsid()
    null = os.open("/dev/null", os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)
    signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED)
    sigfd = _signalfd_for(HANDLED)
    if net_lo_up:
        loopback_up()
    # The most any network mode lets processes inside hold; ``init_early`` narrows it.
    # Here, because it is off the critical path (S maps ids and prepares the session).
    caps.limit_children(caps.KEEP)
    rootfs_mounts.execute([rootfs_mounts.MakePrivate()], "/")
    return sigfd


def setup_message(hostname: str, mount: rootfs_mounts.MountSpec, late_sources: Sequence[str],
                  child_caps: frozenset[int]) -> dict[str, Any]:
    """The supervisor's "setup" message: what the waiting init builds its root from."""
    return {"op": "setup", "hostname": hostname, "mount": rootfs_mounts.spec_to_json(mount),
            "late_sources": list(late_sources), "child_caps": sorted(child_caps)}


def setup_spec(message: dict[str, Any]) -> tuple[InitSpec, str]:
    """(the init's spec, hostname) from a "setup" message; ``SpecError`` if malformed."""
    if message.get("op") != "setup":
        raise rootfs_mounts.SpecError(f"expected the setup message, got {message.get('op')!r}")
    hostname = message.get("hostname")
    late_sources = message.get("late_sources")
    child_caps = message.get("child_caps")
    mount = message.get("mount")
    if not isinstance(hostname, str) or not isinstance(mount, dict):
        raise rootfs_mounts.SpecError("setup: hostname and mount are required")
    if not isinstance(late_sources, list) or not all(isinstance(x, str) for x in late_sources):
        raise rootfs_mounts.SpecError("setup: late_sources must be a list of strings")
    if not isinstance(child_caps, list) or not all(
            isinstance(x, int) and not isinstance(x, bool) for x in child_caps):
        raise rootfs_mounts.SpecError("setup: child_caps must be a list of integers")
    spec = rootfs_mounts.spec_from_json(mount)
    early, middle, late = rootfs_mounts.split_plan(rootfs_mounts.plan_mounts(spec), late_sources)
    return InitSpec(early=early, middle=middle, late=late, root=spec.root,
                    child_caps=frozenset(child_caps)), hostname


def init_early(spec: InitSpec) -> None:
    """With the spec: narrow what children may hold to the mode's set, then the plan's
    first part. The init keeps its own capabilities for the mounts still to come."""
    caps.drop_bounding(caps.KEEP - spec.child_caps)
    rootfs_mounts.execute(spec.early, spec.root)


def init_middle(spec: InitSpec) -> None:
    """With the id maps written: the overlay and everything not waiting on the supervisor."""
    rootfs_mounts.execute(spec.middle, spec.root)


def init_main(spec: InitSpec, sock: socket.socket, sigfd: int) -> NoReturn:
    """The body of PID 1 (ids mapped, uid 0): finish the root, say "ready", serve."""
    try:
        rootfs_mounts.execute(spec.late, spec.root)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            initproto.send(sock, {"op": "failed", "message": f"sandbox setup failed: {exc}"})
        os._exit(SETUP_FAILED)
    init = Init(sock, sigfd)
    init.send({"op": "ready", "pid": os.getpid()})
    try:
        init.run()
    except BaseException as exc:  # a bug: take the sandbox down rather than limp on
        with contextlib.suppress(OSError):
            initproto.send(sock, {"op": "failed", "message": f"sandbox init failed: {exc}"})
        with contextlib.suppress(OSError):
            os.kill(-1, signal.SIGKILL)
        os._exit(SETUP_FAILED)
