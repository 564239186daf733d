"""The capabilities processes inside a sandbox may hold (numbers and masks; pure).

Processes inside run as uid 0 of the session's user namespace. Root of a user namespace
holds every capability *within* it, which would let an agent remount its root, unmount
the workspace bind to see what is under it, or rewrite the network namespace's rules.
So before anything runs inside, the init (``coop-init``, ``csrc/coop-init.c``) drops
everything outside the set given here from its bounding set and clears its inheritable
and ambient sets: every program it then starts gets, at ``execve``, exactly the bounding
set as permitted and effective capabilities, and no later exec, setuid binary or file
capability can bring the others back.

``KEEP`` is the set container runtimes give by default: what package managers, ``su``,
``ping`` and servers on low ports need. CAP_NET_RAW is in it only for network modes that
declare ``net_raw_safe`` (see ``sandbox.host.child_capabilities``): where the reachability
rules live inside the sandbox's own network namespace (rootless ``veth``), a packet
socket would walk past them, so there it is dropped too.

``PR_SET_NO_NEW_PRIVS`` is deliberately *not* set: it would make setuid binaries
inside (``su``, ``sudo``, ``ping``) stop working, and it adds nothing here: a setuid-root
binary inside gains only uid 0 of the namespace and the capabilities still in the
bounding set, which are exactly the ones we keep.
"""

from __future__ import annotations

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


def mask(caps: frozenset[int]) -> int:
    """The 64-bit capability mask of ``caps``."""
    value = 0
    for cap in caps:
        value |= 1 << cap
    return value


def status_mask(status_text: str, field: str = "CapEff") -> int:
    """A capability mask (``CapEff``, ``CapBnd``, ...) from a ``/proc/PID/status`` text,
    for tests and diagnostics."""
    for line in status_text.splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1], 16)
    raise ValueError(f"no {field} line in status text")
