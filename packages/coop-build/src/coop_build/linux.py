"""Thin ctypes wrappers for the Linux syscalls Python 3.11 lacks.

``os.unshare``/``os.setns`` arrive only in 3.12, and mounts never reached ``os``. Each
wrapper raises ``OSError`` with the errno and a message naming the call and its path, so
a failure inside a namespace setup reads like ``mount(overlay -> /x): Invalid argument``.
The build runner and the session sandbox both use this module; it holds no policy.
"""

from __future__ import annotations

import ctypes
import os

# unshare(2) / setns(2) / clone(2) namespace flags.
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

# mount(2) flags.
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_SYNCHRONOUS = 0x10
MS_REMOUNT = 0x20
MS_MANDLOCK = 0x40
MS_DIRSYNC = 0x80
MS_NOSYMFOLLOW = 0x100
MS_NOATIME = 0x400
MS_NODIRATIME = 0x800
MS_BIND = 0x1000
MS_MOVE = 0x2000
MS_REC = 0x4000
MS_SILENT = 0x8000
MS_UNBINDABLE = 1 << 17
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MS_RELATIME = 1 << 21
MS_STRICTATIME = 1 << 24

# umount2(2) flags.
MNT_FORCE = 0x1
MNT_DETACH = 0x2
MNT_EXPIRE = 0x4
UMOUNT_NOFOLLOW = 0x8

# open_tree(2) and mount_setattr(2): the new mount API Python does not wrap.
OPEN_TREE_CLONE = 0x1
OPEN_TREE_CLOEXEC = os.O_CLOEXEC
AT_RECURSIVE = 0x8000
AT_EMPTY_PATH = 0x1000
MOUNT_ATTR_IDMAP = 0x00100000
# The same numbers on every architecture with the generic syscall table (x86_64 too).
_SYS_OPEN_TREE = 428
_SYS_MOUNT_SETATTR = 442


class _MountAttr(ctypes.Structure):
    _fields_ = (("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64))


# prctl(2) options used here.
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_NAME = 15
PR_SET_CHILD_SUBREAPER = 36

# statvfs f_flag bits (ST_*) and the mount flags they stand for: a bind remount inside
# a user namespace must repeat the "locked" flags of the original mount or get EPERM.
_ST_TO_MS = (
    (os.ST_RDONLY, MS_RDONLY),
    (os.ST_NOSUID, MS_NOSUID),
    (os.ST_NODEV, MS_NODEV),
    (os.ST_NOEXEC, MS_NOEXEC),
    (os.ST_NOATIME, MS_NOATIME),
    (os.ST_NODIRATIME, MS_NODIRATIME),
    (os.ST_RELATIME, MS_RELATIME),
)

_SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "riscv64": 41, "armv7l": 218, "i686": 217}


def _load_libc() -> ctypes.CDLL:
    """glibc by its soname; ``find_library`` only elsewhere (musl): it runs
    ``ldconfig -p`` in a subprocess, which the namespace helper paid on every start."""
    try:
        return ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:
        from ctypes.util import find_library

        return ctypes.CDLL(find_library("c") or "libc.so", use_errno=True)


_libc = _load_libc()
_libc.mount.argtypes = [
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_ulong,
    ctypes.c_char_p,
]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.unshare.argtypes = [ctypes.c_int]
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.sethostname.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                        ctypes.c_ulong]
_libc.syscall.restype = ctypes.c_long


def _fs(path: str | os.PathLike[str] | None) -> bytes | None:
    return None if path is None else os.fsencode(path)


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def unshare(flags: int) -> None:
    """Move the calling process into new namespaces (``CLONE_NEW*`` flags)."""
    _check(_libc.unshare(flags), f"unshare(0x{flags:x})")


def setns(fd: int, nstype: int = 0) -> None:
    """Join the namespace that ``fd`` (an open ``/proc/PID/ns/*`` file) refers to."""
    _check(_libc.setns(fd, nstype), f"setns(fd {fd}, 0x{nstype:x})")


def mount(
    source: str | os.PathLike[str] | None,
    target: str | os.PathLike[str],
    fstype: str | None = None,
    flags: int = 0,
    data: str | None = None,
) -> None:
    """mount(2); ``source``/``fstype``/``data`` may be None where the call allows."""
    result = _libc.mount(
        _fs(source), _fs(target), None if fstype is None else fstype.encode(), flags,
        None if data is None else data.encode(),
    )
    _check(result, f"mount({source or fstype} -> {os.fspath(target)})")


def umount2(target: str | os.PathLike[str], flags: int = 0) -> None:
    """umount2(2)."""
    _check(_libc.umount2(_fs(target), flags), f"umount2({os.fspath(target)})")


def pivot_root(new_root: str | os.PathLike[str], put_old: str | os.PathLike[str]) -> None:
    """pivot_root(2), which glibc does not wrap."""
    number = _SYS_PIVOT_ROOT.get(os.uname().machine)
    if number is None:
        raise OSError(0, f"pivot_root: unknown syscall number on {os.uname().machine}")
    result = _libc.syscall(ctypes.c_long(number), _fs(new_root), _fs(put_old))
    _check(int(result), f"pivot_root({os.fspath(new_root)}, {os.fspath(put_old)})")


def sethostname(name: str) -> None:
    """Set the hostname of the current UTS namespace."""
    raw = name.encode()
    _check(_libc.sethostname(raw, len(raw)), f"sethostname({name})")


def prctl(option: int, arg2: int = 0) -> None:
    """prctl(2) with one argument (PR_SET_PDEATHSIG, PR_SET_CHILD_SUBREAPER, ...)."""
    _check(_libc.prctl(option, arg2, 0, 0, 0), f"prctl({option})")


def set_pdeathsig(signum: int) -> None:
    """Have the kernel send ``signum`` to us when the thread that forked us dies."""
    prctl(PR_SET_PDEATHSIG, signum)


def idmapped_clone(dir_fd: int, userns_fd: int, *, recursive: bool = False) -> int:
    """A detached copy of the mount at the directory ``dir_fd`` (a bind, not yet attached
    anywhere) that shows its files' owners through the id map of the user namespace
    ``userns_fd``: a host id H reads as whatever inside id H maps to there, and files
    made through it get the host id inside id H maps to. Cloned from the descriptor, not
    a path, so that what was checked is what is shown. Returns its descriptor
    (close-on-exec), for a process in that namespace to attach with ``move_mount``.
    Needs host root's CAP_SYS_ADMIN, ``dir_fd`` in the caller's mount namespace and a
    filesystem that supports idmapped mounts.
    """
    flags = (OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_EMPTY_PATH
             | (AT_RECURSIVE if recursive else 0))
    fd = int(_libc.syscall(ctypes.c_long(_SYS_OPEN_TREE), ctypes.c_int(dir_fd), b"",
                           ctypes.c_uint(flags)))
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"open_tree: {os.strerror(err)}")
    attr = _MountAttr(attr_set=MOUNT_ATTR_IDMAP, userns_fd=userns_fd)
    result = int(_libc.syscall(ctypes.c_long(_SYS_MOUNT_SETATTR), ctypes.c_int(fd), b"",
                               ctypes.c_uint(AT_EMPTY_PATH | (AT_RECURSIVE if recursive else 0)),
                               ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr))))
    if result != 0:
        err = ctypes.get_errno()
        os.close(fd)
        raise OSError(err, f"mount_setattr(idmap): {os.strerror(err)}")
    return fd


def mount_flags_of(path: str | os.PathLike[str]) -> int:
    """The ``MS_*`` flags of the mount holding ``path`` (for bind remounts)."""
    f_flag = os.statvfs(path).f_flag
    return sum(ms for st, ms in _ST_TO_MS if f_flag & st)


def bind_mount(
    source: str | os.PathLike[str],
    target: str | os.PathLike[str],
    *,
    readonly: bool = False,
    recursive: bool = False,
) -> None:
    """Bind ``source`` on ``target``; read-only needs a second (remount) call.

    The remount keeps the source mount's nosuid/nodev/noexec/atime flags: inside a user
    namespace those are locked and dropping one is refused.
    """
    mount(source, target, None, MS_BIND | (MS_REC if recursive else 0))
    if readonly:
        flags = mount_flags_of(target) | MS_BIND | MS_REMOUNT | MS_RDONLY
        mount(None, target, None, flags)
