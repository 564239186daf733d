"""Making a sandbox's init: one clone into new namespaces, its id maps, and the child's
path until it execs ``coop-init`` (``csrc/coop-init.c``), ahead of its sandbox or not.

``prepare_init`` clones the *current* process (never a new interpreter) into user,
mount, PID, UTS, IPC and optionally network namespaces, and maps its ids. The child
closes what it inherited, waits for "mapped" and execs ``coop-init`` by descriptor
(``initexe``): as uid 0 of its namespace (root's clone becomes it first), so the exec
leaves it its capabilities there.
``coop-init`` then sets up what needs no sandbox (signals, loopback, private propagation)
and waits for the set-up records naming its root. ``Sandbox.start`` calls
``prepare_init``, or takes an init made earlier (a session starter's spare keeps one
ready). The exec, and the teardown of the copied address space it implies, overlap with
the caller's own work on the session.
"""

from __future__ import annotations

import _thread
import contextlib
import ctypes
import gc
import itertools
import os
import platform
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NoReturn

from coop_build import linux
from coop_build.errors import ToolError
from coop_build.idmap import IdMap, write_idmap
from coop_build.rootlayout import DEFAULT_PATH
from coop_run.errors import SandboxError
from coop_run.sandbox import initexe, initproto

MAX_FD = 1 << 20
# coop-init's signals: blocked by the cloned child first thing (after gc.freeze), so none
# sent before coop-init runs is lost (the init of a PID namespace would drop them: it has
# no handler for them yet).
HANDLED = (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
EXEC_FAILED = 125
NS_FLAGS = (linux.CLONE_NEWUSER | linux.CLONE_NEWNS | linux.CLONE_NEWPID
            | linux.CLONE_NEWUTS | linux.CLONE_NEWIPC)


# --- id maps ------------------------------------------------------------------------


def write_idmap_parallel(pid: int, idmap: IdMap) -> None:
    """``coop_build.idmap.write_idmap``, but a plain user's ``newuidmap`` and
    ``newgidmap`` run at the same time: each is a setuid exec of about a millisecond,
    on the critical path of every start."""
    if os.geteuid() == 0 or not idmap.full:
        write_idmap(pid, idmap)
        return
    procs = []
    for tool, mapping in (("newgidmap", idmap.gid_map), ("newuidmap", idmap.uid_map)):
        exe = shutil.which(tool)
        if exe is None:
            raise ToolError(f"{tool} is not installed (apt-get install uidmap)", tool=tool)
        argv = [exe, str(pid), *(str(v) for line in mapping for v in line)]
        procs.append((tool, subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                             stdout=subprocess.DEVNULL,
                                             stderr=subprocess.PIPE)))
    failures = []
    for tool, proc in procs:
        _, err = proc.communicate()
        if proc.returncode != 0:
            lines = err.decode(errors="replace").strip().splitlines()
            failures.append((tool, lines[-1] if lines else f"exit {proc.returncode}",
                             err.decode(errors="replace")))
    if failures:
        tool, detail, stderr = failures[0]
        raise ToolError(f"{tool} {pid} failed: {detail}", tool=tool, stderr=stderr)


# --- the init, ahead of its sandbox -----------------------------------------------------


@dataclass
class PreparedInit:
    """An init cloned ahead of its sandbox: namespaces made, ids mapped, waiting for its
    root. A session starter keeps one ready (``Sandbox(config, prepared=...)``), which
    takes the clone and the id maps (``newuidmap``: a few ms) off the start's path. The
    cloning process is its parent and must be the one that starts the sandbox."""

    pid: int
    sock: socket.socket     # our end of the control channel
    pidfd: int
    idmap: IdMap
    unshare_net: bool

    def discard(self) -> None:
        """End it unused: at end of file on its channel it exits; reap it."""
        self.sock.close()
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.pid, 0)
        os.close(self.pidfd)


def prepare_init(idmap: IdMap, *, unshare_net: bool) -> PreparedInit:
    """Clone an init into new namespaces and write its id maps (see ``PreparedInit``)."""
    flags = NS_FLAGS | (linux.CLONE_NEWNET if unshare_net else 0)
    exe = initexe.exe_fd()  # before the clone: the child execs it once its ids are mapped
    parent_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    parent_sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    try:
        pid = clone_into_namespaces(flags)
    except BaseException:
        parent_sock.close()
        child_sock.close()
        raise
    if pid == 0:  # pragma: no cover - the child never returns
        _init_child(child_sock, exe, unshare_net)
    child_sock.close()
    try:
        pidfd = os.pidfd_open(pid)
    except BaseException:
        parent_sock.close()
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        raise
    prepared = PreparedInit(pid=pid, sock=parent_sock, pidfd=pidfd, idmap=idmap,
                            unshare_net=unshare_net)
    try:
        write_idmap_parallel(pid, idmap)
        initproto.send(parent_sock, {"op": "mapped"})
    except BaseException:
        prepared.discard()
        raise
    return prepared


# --- the clone ------------------------------------------------------------------------

_SYS_CLONE = {"x86_64": 56, "aarch64": 220, "riscv64": 220, "armv7l": 120, "i686": 120}
# PyDLL keeps the GIL held across the call, exactly as os.fork() does around fork().
_pylibc = ctypes.PyDLL(None, use_errno=True)
_pylibc.syscall.restype = ctypes.c_long
_pylibc.syscall.argtypes = (ctypes.c_long, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                            ctypes.c_ulong, ctypes.c_ulong)
_before_fork = ctypes.pythonapi.PyOS_BeforeFork
_after_fork_parent = ctypes.pythonapi.PyOS_AfterFork_Parent
_after_fork_child = ctypes.pythonapi.PyOS_AfterFork_Child


def clone_into_namespaces(flags: int) -> int:
    """``os.fork()`` whose child starts in new namespaces (``CLONE_NEW*`` ``flags``).

    One clone instead of fork + unshare + fork: the child is PID 1 of its new PID
    namespace at once. Python's own fork bookkeeping runs around it as in ``os.fork``.
    Returns the child's pid in the parent and 0 in the child.
    """
    number = _SYS_CLONE.get(platform.machine())
    if number is None:
        raise SandboxError(f"clone: unknown syscall number on {platform.machine()}")
    # With no other Python thread alive the child's interpreter state is already right
    # (the GIL is held across the call, nothing else holds a lock), and skipping the
    # at-fork hooks saves about half a millisecond of the child's start.
    alone = _thread._count() == 0
    if not alone:
        _before_fork()
    pid = int(_pylibc.syscall(number, flags | signal.SIGCHLD, 0, 0, 0, 0))
    if pid == 0:
        if not alone:
            _after_fork_child()
        return 0
    err = ctypes.get_errno()
    if not alone:
        _after_fork_parent()
    if pid < 0:
        raise OSError(err, f"clone(0x{flags:x}): {os.strerror(err)}")
    return pid


def close_other_fds(keep: Iterable[int]) -> None:
    """Close every descriptor except ``keep`` and stdio (``close_range``: one syscall per
    gap): after a fork, other sandboxes' control sockets must not leak into this one,
    nor the daemon's into a spare (they would never see end of file)."""
    kept = sorted(set(keep) | {0, 1, 2})
    for low, high in itertools.pairwise([*kept, MAX_FD]):
        if high > low + 1:
            os.closerange(low + 1, high)


def _init_child(sock: socket.socket, exe: int, net_lo_up: bool) -> NoReturn:
    """The cloned child: wait for its id maps, then become ``coop-init``.

    As little Python as possible runs here: every object it touches is a page copied
    from the parent.
    """
    # Everything inherited goes to the permanent generation: garbage among it (say, a
    # socket in a cycle) must never be finalised here, closing a descriptor we keep.
    gc.freeze()
    try:
        signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED)
        close_other_fds((sock.fileno(), exe))
        received = initproto.recv(sock)
        if received is None or received.message["op"] != "mapped":
            os._exit(0)  # a spare's init nobody needed (or a confused parent: never exec)
        if os.getuid() != 0:
            # Root's clone is still host uid 0, which root's map (coop's range) leaves
            # out: an exec would leave it no capabilities. uid 0 of the namespace first,
            # with no supplementary group (root's would be host gid 0's). A plain user's
            # clone is its uid 0 already (coop-init drops its groups).
            os.setgroups([])
            os.setresgid(0, 0, 0)
            os.setresuid(0, 0, 0)
        os.set_inheritable(sock.fileno(), True)
        argv = ["coop-init", str(sock.fileno()), DEFAULT_PATH, "1" if net_lo_up else "0"]
        os.execve(exe, argv, {})  # noqa: S606 - exec by descriptor, no shell
    except BaseException as exc:
        with contextlib.suppress(OSError):
            initproto.send(sock, {"op": "failed", "message": f"cannot start coop-init: {exc}"})
        os._exit(EXEC_FAILED)
