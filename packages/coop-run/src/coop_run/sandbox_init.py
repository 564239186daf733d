"""PID 1 of a sandbox, in Python: from the clone until its root is built, then ``coop-init``.

The init is a clone of the supervisor's Python process (never a new interpreter:
starting one costs more than the whole sandbox start). It builds the root (mounts,
``pivot_root``), then execs ``coop-init`` (``csrc/coop-init.c``, by descriptor:
``initexe``), which reaps, forwards signals and spawns on request for the sandbox's
whole life. A forked Python init would keep its copy-on-write share of the
supervisor's heap all that time. After ``pivot_root`` the host's filesystem is gone, so
everything used up to the exec is imported at the top and resolved before the pivot.

The signals ``coop-init`` handles are blocked from the start, so one sent before it runs
waits for it. The bounding set is left whole here: ``coop-init`` narrows it to what
processes inside may hold, after the exec that gives the init its own capabilities.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import socket
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from coop_build.rootlayout import DEFAULT_PATH
from coop_run import caps, initproto, rootfs_mounts

SETUP_FAILED = 125
# coop-init's signals: blocked from the clone on, so none is lost before it runs.
HANDLED = (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


@dataclass(frozen=True)
class InitSpec:
    """What the init builds its root from (``setup_spec``)."""

    early: Sequence[rootfs_mounts.Op]   # before the overlay (creates no files)
    middle: Sequence[rootfs_mounts.Op]  # with the maps: overlay, /proc, /dev, ...
    late: Sequence[rootfs_mounts.Op]    # binds of files the supervisor writes meanwhile
    root: str                           # host dir the overlay is mounted on
    child_caps: frozenset[int] = caps.KEEP  # the most any process started inside may hold


def loopback_up() -> None:
    """Set IFF_UP on ``lo`` of our network namespace (SIOCGIFFLAGS/SIOCSIFFLAGS)."""
    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        req = struct.pack("16sh", b"lo", 0).ljust(40, b"\0")
        res = fcntl.ioctl(sock.fileno(), siocgifflags, req)
        flags = struct.unpack_from("16sh", res)[1]
        fcntl.ioctl(sock.fileno(), siocsifflags,
                    struct.pack("16sh", b"lo", flags | iff_up).ljust(40, b"\0"))


def init_base(net_lo_up: bool) -> None:
    """What PID 1 does before it knows its sandbox.

    Own session, quiet stdio, signals held for ``coop-init``, loopback, private mount
    propagation: all of it needs only the capabilities the clone granted. A spare's init
    (cloned ahead of any request) then waits for ``setup_spec``'s message.
    """
    os.setsid()
    null = os.open("/dev/null", os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)
    signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED)
    if net_lo_up:
        loopback_up()
    rootfs_mounts.execute([rootfs_mounts.MakePrivate()], "/")


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
    """With the spec: the plan's first part."""
    rootfs_mounts.execute(spec.early, spec.root)


def init_middle(spec: InitSpec) -> None:
    """With the id maps written: the overlay and everything not waiting on the supervisor."""
    rootfs_mounts.execute(spec.middle, spec.root)


def init_main(spec: InitSpec, sock: socket.socket, exe_fd: int) -> NoReturn:
    """The end of the Python init (ids mapped, uid 0): finish the root, become
    ``coop-init`` (which says "ready" and serves)."""
    step = "sandbox setup failed"
    try:
        rootfs_mounts.execute(spec.late, spec.root)
        step = "cannot start coop-init"
        os.set_inheritable(sock.fileno(), True)
        argv = ["coop-init", str(sock.fileno()), f"{caps.mask(spec.child_caps):x}", DEFAULT_PATH]
        os.execve(exe_fd, argv, {})  # noqa: S606 - exec by descriptor, no shell
    except BaseException as exc:
        with contextlib.suppress(OSError):
            initproto.send(sock, {"op": "failed", "message": f"{step}: {exc}"})
        os._exit(SETUP_FAILED)
