"""Unix sockets done safely (SPEC 6): 0600 from birth, no symlinks, no foreign owners.

The daemon socket is the only door to the user's sessions, so it is bound with a umask
that leaves no window where it is group- or world-accessible, its directory and any old
socket must belong to us, and every peer's uid is checked with ``SO_PEERCRED``.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import select
import socket
import stat
import struct
from pathlib import Path

from coop_run.errors import DaemonError, DaemonUnavailableError, SocketPathError

log = logging.getLogger(__name__)

_UCRED = struct.Struct("3i")  # pid, uid, gid
_BACKLOG = 128
# sun_path is 108 bytes including the terminating NUL.
MAX_PATH_BYTES = 107


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """``(pid, uid, gid)`` of the process at the other end of a unix stream socket."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    pid, uid, gid = _UCRED.unpack(raw)
    return pid, uid, gid


def peer_uid(sock: socket.socket) -> int:
    return peer_credentials(sock)[1]


_NAMESPACES = ("user", "pid")


def peer_refusal(sock: socket.socket) -> str | None:
    """Why a connected peer may not talk to a coop socket, or None when it may: it must be
    our user, and in our user and PID namespaces.

    The uid alone says nothing inside a sandbox, whose uid 0 is the user: a process there
    that reaches the socket (a workspace or persist bind containing ``COOP_HOME``) would
    pass it. The peer's pid (``SO_PEERCRED``, as our namespace sees it) is pinned with a
    pidfd before its namespaces are read, and the pidfd must still be open on a live
    process afterwards, so a pid reused in between is never taken for the peer. Whatever
    cannot be read is refused.
    """
    try:
        pid, uid, _gid = peer_credentials(sock)
    except OSError as exc:
        return f"a peer without credentials ({exc.strerror or exc})"
    if uid != os.geteuid():
        return f"uid {uid} (pid {pid}): not our user"
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        return f"pid {pid}: gone"
    try:
        for ns in _NAMESPACES:
            theirs = Path(f"/proc/{pid}/ns/{ns}").stat()
            ours = Path(f"/proc/self/ns/{ns}").stat()
            if (theirs.st_dev, theirs.st_ino) != (ours.st_dev, ours.st_ino):
                return f"pid {pid}: in another {ns} namespace (inside a sandbox?)"
        if select.select([pidfd], [], [], 0)[0]:  # readable: it exited, the pid may be reused
            return f"pid {pid}: ended while it was checked"
    except OSError as exc:
        return f"pid {pid}: its namespaces cannot be read ({exc.strerror or exc})"
    finally:
        os.close(pidfd)
    return None


def _check_length(path: Path) -> None:
    if len(os.fsencode(path)) > MAX_PATH_BYTES:
        raise SocketPathError(f"socket path {path} is too long for a unix socket "
                              f"(at most {MAX_PATH_BYTES} bytes)")


def _check_dir(directory: Path) -> None:
    """The socket's directory must be ours (or a sticky dir of root's, such as /tmp)."""
    try:
        st = directory.lstat()
    except FileNotFoundError:
        raise SocketPathError(f"socket directory {directory} does not exist") from None
    if stat.S_ISLNK(st.st_mode):
        # Resolve once: a symlinked directory is fine as long as its target is ours.
        st = directory.stat()
    if not stat.S_ISDIR(st.st_mode):
        raise SocketPathError(f"{directory} is not a directory; choose another --socket")
    uid = os.geteuid()
    if st.st_uid == uid:
        return
    if st.st_uid == 0 and st.st_mode & stat.S_ISVTX:
        return
    raise SocketPathError(
        f"socket directory {directory} belongs to uid {st.st_uid}, not to you (uid {uid})"
    )


def is_listening(path: Path) -> bool:
    """Whether something accepts connections on ``path`` (False: refused or gone)."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(os.fsencode(path))
    except (ConnectionRefusedError, FileNotFoundError):
        return False
    except OSError as exc:
        if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):
            return False
        raise
    finally:
        probe.close()
    return True


def check_socket_path(path: Path) -> None:
    """Refuse a socket path that is a symlink, not a socket, or owned by another user.

    A missing path is fine. Raises ``SocketPathError`` with one line saying what is wrong.
    """
    _check_length(path)
    _check_dir(path.parent)
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode):
        raise SocketPathError(f"socket path {path} is a symlink; refusing to use it")
    if not stat.S_ISSOCK(st.st_mode):
        raise SocketPathError(f"{path} exists and is not a socket; refusing to replace it")
    if st.st_uid != os.geteuid():
        raise SocketPathError(
            f"socket {path} belongs to uid {st.st_uid}, not to you (uid {os.geteuid()})"
        )


def bind_unix_socket(path: Path) -> socket.socket:
    """A listening socket at ``path``, mode 0600, replacing a stale socket file.

    Raises ``SocketPathError`` for an unsafe path and ``DaemonError`` when another
    process already listens there.
    """
    check_socket_path(path)
    if path.exists() or path.is_symlink():
        if is_listening(path):
            raise DaemonError(f"a daemon already listens on {path}", code="DAEMON_RUNNING")
        log.info("removing stale socket %s", path)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    # The umask is process-wide: this runs before the daemon starts any thread.
    old_umask = os.umask(0o177)
    try:
        sock.bind(os.fsencode(path))
    except OSError as exc:
        sock.close()
        raise DaemonError(f"cannot bind {path}: {exc.strerror or exc}") from exc
    finally:
        os.umask(old_umask)
    try:
        path.chmod(0o600)
        sock.listen(_BACKLOG)
    except OSError as exc:
        sock.close()
        raise DaemonError(f"cannot listen on {path}: {exc.strerror or exc}") from exc
    return sock


def check_connect_path(path: Path, *, what: str = "daemon") -> None:
    """Refuse to connect to ``path`` if it is a symlink or another user's socket.

    ``DaemonUnavailableError`` when nothing is there. ``what`` names the listener in
    messages ("daemon", "supervisor").
    """
    _check_length(path)
    try:
        st = path.lstat()
    except (FileNotFoundError, NotADirectoryError) as exc:
        raise DaemonUnavailableError(f"no {what} listens on {path}") from exc
    if stat.S_ISLNK(st.st_mode):
        raise SocketPathError(f"socket path {path} is a symlink; refusing to use it")
    uid = os.geteuid()
    if stat.S_ISSOCK(st.st_mode) and st.st_uid != uid:
        raise SocketPathError(f"socket {path} belongs to uid {st.st_uid}, not to you (uid {uid})")


def check_peer(sock: socket.socket, path: Path, *, what: str = "daemon") -> None:
    """Refuse a listener that does not run as us (``SO_PEERCRED``); closes ``sock``."""
    uid = os.geteuid()
    peer = peer_uid(sock)
    if peer != uid:
        sock.close()
        raise SocketPathError(f"the {what} on {path} runs as uid {peer}, not as you (uid {uid})")


def connect_unix(path: Path, timeout: float | None = None, *,
                 what: str = "daemon") -> socket.socket:
    """A blocking connection to our own daemon (or supervisor: ``what``) at ``path``.

    ``DaemonUnavailableError`` if nobody listens. The path must not be a symlink or
    another user's socket, and the listener must run as us (``SO_PEERCRED``): the client
    never talks to somebody else's daemon, which could read what it sends.
    """
    check_connect_path(path, what=what)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(os.fsencode(path))
    except (FileNotFoundError, ConnectionRefusedError) as exc:
        sock.close()
        raise DaemonUnavailableError(f"no {what} listens on {path}") from exc
    except PermissionError as exc:
        sock.close()
        raise SocketPathError(f"permission denied connecting to {path}") from exc
    except OSError as exc:
        sock.close()
        if exc.errno in (errno.ENOENT, errno.ECONNREFUSED, errno.ENOTDIR):
            raise DaemonUnavailableError(f"no {what} listens on {path}") from exc
        raise DaemonError(f"cannot connect to {path}: {exc.strerror or exc}") from exc
    check_peer(sock, path, what=what)
    return sock


def recv_exact(sock: socket.socket, size: int) -> bytes:
    """Exactly ``size`` bytes from a blocking stream socket; ``ConnectionError`` if the
    peer closes first."""
    data = bytearray(size)
    view = memoryview(data)
    got = 0
    while got < size:
        n = sock.recv_into(view[got:])
        if n == 0:
            raise ConnectionError("peer closed")
        got += n
    return bytes(data)
