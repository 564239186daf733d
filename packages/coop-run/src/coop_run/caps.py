"""Dropping capabilities for every process the sandbox init starts.

Processes inside run as uid 0 of the session's user namespace. Root of a user namespace
holds every capability *within* it, which would let an agent remount its root, unmount
the workspace bind to see what is under it, or rewrite the network namespace's rules.
So before anything runs inside, the init drops everything outside ``KEEP`` from its
bounding set and clears its inheritable set (``limit_children``): every program it then starts
gets, at ``execve``, exactly the bounding set as permitted and effective capabilities,
and no later exec, setuid binary or file capability can bring the others back. (Doing
it in the init once, rather than in each child, lets the init start children with
``posix_spawn``, without copying its page tables.)

``KEEP`` is the set container runtimes give by default: what package managers, ``su``,
``ping`` and servers on low ports need. CAP_NET_RAW is in it only for network modes that
declare ``net_raw_safe`` (see ``sandbox.child_capabilities``): where the reachability
rules live inside the sandbox's own network namespace (rootless ``veth``), a packet
socket would walk past them, so there it is dropped too.

``PR_SET_NO_NEW_PRIVS`` is deliberately *not* set: it would make setuid binaries
inside (``su``, ``sudo``, ``ping``) stop working, and it adds nothing here: a setuid-root
binary inside gains only uid 0 of the namespace and the capabilities still in the
bounding set, which are exactly the ones we keep.

Pure parts (numbers, masks) first; ``limit_children()`` does the syscalls, with every
libc function resolved at import.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from collections.abc import Iterable

CAP_CHOWN = 0
CAP_DAC_OVERRIDE = 1
CAP_DAC_READ_SEARCH = 2
CAP_FOWNER = 3
CAP_FSETID = 4
CAP_KILL = 5
CAP_SETGID = 6
CAP_SETUID = 7
CAP_SETPCAP = 8
CAP_NET_BIND_SERVICE = 10
CAP_NET_ADMIN = 12
CAP_NET_RAW = 13
CAP_SYS_MODULE = 16
CAP_SYS_CHROOT = 18
CAP_SYS_PTRACE = 19
CAP_SYS_ADMIN = 21
CAP_MKNOD = 27
CAP_AUDIT_WRITE = 29
CAP_SETFCAP = 31

KEEP: frozenset[int] = frozenset({
    CAP_CHOWN, CAP_DAC_OVERRIDE, CAP_FOWNER, CAP_FSETID, CAP_KILL, CAP_SETGID, CAP_SETUID,
    CAP_SETPCAP, CAP_NET_BIND_SERVICE, CAP_NET_RAW, CAP_SYS_CHROOT, CAP_MKNOD,
    CAP_AUDIT_WRITE, CAP_SETFCAP,
})

PR_CAPBSET_DROP = 24
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
_LINUX_CAPABILITY_VERSION_3 = 0x20080522


def last_cap() -> int:
    """The highest capability number this kernel knows (read before ``pivot_root``)."""
    try:
        with open("/proc/sys/kernel/cap_last_cap") as fh:  # noqa: PTH123
            return int(fh.read())
    except (OSError, ValueError):
        return 40


def mask(caps: frozenset[int]) -> int:
    """The 64-bit capability mask of ``caps``."""
    value = 0
    for cap in caps:
        value |= 1 << cap
    return value


def split_mask(value: int) -> tuple[int, int]:
    """The two 32-bit words ``capset`` takes (low, high)."""
    return value & 0xFFFFFFFF, (value >> 32) & 0xFFFFFFFF


class _Header(ctypes.Structure):
    _fields_ = (("version", ctypes.c_uint32), ("pid", ctypes.c_int))


class _Data(ctypes.Structure):
    _fields_ = (("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32))


_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_capset = _libc.capset
_capset.argtypes = (ctypes.POINTER(_Header), ctypes.POINTER(_Data))
_capget = _libc.capget
_capget.argtypes = (ctypes.POINTER(_Header), ctypes.POINTER(_Data))
_prctl = _libc.prctl
_prctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                   ctypes.c_ulong)
_LAST_CAP = last_cap()


def _fail(what: str) -> OSError:
    err = ctypes.get_errno()
    return OSError(err, f"{what}: {os.strerror(err)}")


def limit_children(keep: frozenset[int] = KEEP, *, top: int | None = None) -> None:
    """Leave only ``keep`` in the bounding set, and clear the inheritable and ambient
    sets, so that every program this process (the init) starts from now on runs with
    ``keep`` at most, while the init itself keeps its effective set.

    After ``execve`` a uid-0 process gets permitted = effective = bounding set (root's
    file capabilities count as all-ones), inheritable and ambient being empty; no later
    exec, setuid binary or file capability can exceed the bounding set.
    """
    top = _LAST_CAP if top is None else top
    for cap in range(top + 1):
        if cap not in keep and _prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise _fail(f"prctl(PR_CAPBSET_DROP, {cap})")
    if _prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0:
        raise _fail("prctl(PR_CAP_AMBIENT_CLEAR_ALL)")
    header = _Header(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_Data * 2)()
    if _capget(ctypes.byref(header), data) != 0:
        raise _fail("capget")
    for word in (0, 1):
        data[word].inheritable = 0
    if _capset(ctypes.byref(header), data) != 0:
        raise _fail("capset")


def drop_bounding(drop: Iterable[int]) -> None:
    """Remove ``drop`` from the bounding set (after ``limit_children``: a narrower mode)."""
    for cap in sorted(drop):
        if _prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise _fail(f"prctl(PR_CAPBSET_DROP, {cap})")


def effective_mask(status_text: str) -> int:
    """``CapEff`` from a ``/proc/PID/status`` text (for tests and diagnostics)."""
    for line in status_text.splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    raise ValueError("no CapEff line in status text")
