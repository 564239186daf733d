"""The descriptors that carry host paths to a sandbox's init with its set-up records.

Root's sandbox is an unprivileged id range (``coop_build.subids``) that may not enter
root's 0700 directories, ``COOP_HOME`` among them. So the supervisor opens the host paths
of a record (a layer or a host directory of ``image = "host"``; an overlay's mount point,
upper and work; for root, a bind's
source: a plain user's init is that user and walks to its own) as ``O_PATH``
descriptors and sends them with the record. It opens them below ``/proc/<init>/root``,
which puts them in the init's own mount namespace: the kernel binds and overlays only
mounts of the caller's namespace. A bind marked ``idmapped`` (root's workspace, whose
host-root files must stay its inside root's) gets a detached idmapped mount instead,
which only host root may make.

The workspace is the one source an agent of another session may reach (it may share
the tree): a path walked twice can be a different directory the second time (a
symlink swapped in). So it is opened once (``open_workspace``), its real path read
from the descriptor and checked, and mounted from that descriptor, whoever runs coop.
Root's idmapped copy maps host root alone (``owner_only_userns``): through the
sandbox's own map, every host id 0..65535 would be one of the agent's. That namespace is
made once per process (``owner_userns``: a clone of the caller, about 2 ms) and only ever
used as the map of such a mount; its map cannot change once written.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from coop_build import linux
from coop_build.idmap import IdMap, write_idmap
from coop_run.errors import BindPathError, SandboxError
from coop_run.layout import refused_mount
from coop_run.sandbox.clone import clone_into_namespaces, close_other_fds
from coop_run.sandbox.keptfd import KeptFd

_DIR_PATH = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC

# (uid, gid) -> this process's owner-only user namespace
_owner_userns: dict[tuple[int, int], KeptFd] = {}
_owner_userns_lock = threading.Lock()


class MountFds:
    """Opens the descriptors of one init's set-up records (``for_record``)."""

    def __init__(self, init_pid: int, *, binds_by_path: bool = False,
                 owner: tuple[int, int] | None = None) -> None:
        """``binds_by_path``: the init may walk the host paths itself (a plain user's,
        which is that user): binds other than the workspace carry no descriptor.
        ``owner``: the host (uid, gid) of the sandbox's root, for an idmapped bind."""
        self.init_pid = init_pid
        self.binds_by_path = binds_by_path
        self.owner = owner
        self._root: int | None = None    # /proc/<init>/root: paths are opened below it
        self._workspace: tuple[str, int] | None = None  # (path checked, its descriptor)

    def open_workspace(self, checked: str, coop_homes: Iterable[Path], *,
                       idmapped: bool) -> None:
        """Open the workspace once, as the bind of ``checked`` will use it: refused
        (BindPathError) unless its real path, read from the descriptor, is ``checked``
        (the path the daemon resolved and checked) and no session may have it
        (``layout.refused_mount``). ``idmapped``: opened in our own mount namespace,
        which ``open_tree`` clones from; else below the init's root, where it binds."""
        try:
            fd = os.open(checked, _DIR_PATH) if idmapped else self._open(checked, directory=True)
        except OSError as exc:
            raise BindPathError(f"cannot open the workspace {checked}: {exc.strerror}") from exc
        refusal = workspace_refusal(fd, checked, coop_homes)
        if refusal is not None:
            os.close(fd)
            raise BindPathError(refusal)
        if self._workspace is not None:
            os.close(self._workspace[1])
        self._workspace = (checked, fd)

    def for_record(self, record: dict[str, Any]) -> list[int] | None:
        """The descriptors to send with ``record``, the caller's to close once sent; None
        for an optional bind whose source does not exist (the record is not sent)."""
        op = record["op"]
        if op == "lower":  # a layer, or (image = "host") one of the host's directories
            return [self._open(record["path"], directory=True)]
        if op in ("overlay", "hostlayer"):
            fds: list[int] = []
            try:
                for key in ("root", "upper", "work") if op == "overlay" else ("upper", "work"):
                    fds.append(self._open(record[key], directory=True))
            except BaseException:
                close_all(fds)
                raise
            return fds
        if op != "bind":
            return []
        workspace = self._workspace
        if workspace is not None and record["source"] == workspace[0]:
            if record["idmapped"]:
                return [self._idmapped(workspace[0], workspace[1])]
            return [os.dup(workspace[1])]
        if record["idmapped"]:
            raise SandboxError(f"cannot show {record['source']} to the sandbox: only the "
                               "workspace, opened first, is an idmapped bind")
        if self.binds_by_path:
            return []
        try:
            return [self._open(record["source"], directory=not record["file"])]
        except SandboxError:
            if record["optional"] and not os.path.lexists(record["source"]):
                return None
            raise

    def _open(self, path: str, *, directory: bool) -> int:
        flags = os.O_PATH | os.O_CLOEXEC | (os.O_DIRECTORY if directory else 0)
        if not path.startswith("/"):
            raise SandboxError(f"cannot give {path} to the sandbox: not an absolute path")
        try:
            if self._root is None:
                self._root = os.open(f"/proc/{self.init_pid}/root",
                                     os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            return os.open(path.lstrip("/") or ".", flags, dir_fd=self._root)
        except OSError as exc:
            raise SandboxError(f"cannot give {path} to the sandbox: {exc.strerror}") from exc

    def _idmapped(self, path: str, fd: int) -> int:
        if self.owner is None:
            raise SandboxError(f"cannot show {path} to the sandbox: no owner to map it to")
        try:
            return linux.idmapped_clone(fd, owner_userns(*self.owner))
        except OSError as exc:
            raise SandboxError(
                f"cannot show {path} to root's sandbox with its owners mapped "
                f"({exc.strerror}): root's workspace must be on a filesystem that "
                "supports idmapped mounts (ext4, xfs, btrfs, tmpfs)") from exc

    def close(self) -> None:
        for fd in (self._root, self._workspace and self._workspace[1]):
            if fd is not None:
                os.close(fd)
        self._root = self._workspace = None


def workspace_refusal(fd: int, checked: str, coop_homes: Iterable[Path]) -> str | None:
    """Why the directory ``fd`` may not be bound as the workspace ``checked``, or None."""
    real = Path(f"/proc/self/fd/{fd}").readlink()
    if str(real) != checked:
        return (f"refusing to bind the workspace {checked}: it is now {real} "
                "(it changed after it was checked)")
    for home in coop_homes:
        refusal = refused_mount(real, home)
        if refusal is not None:
            return f"refusing to bind the workspace {real}: {refusal}"
    return None


def owner_userns(uid: int, gid: int) -> int:
    """This process's ``owner_only_userns(uid, gid)``, made on first use and kept
    (close-on-exec; not the caller's to close). Every start of root's sandboxes maps its
    workspace through the same map, so one namespace serves them all (``KeptFd``)."""
    with _owner_userns_lock:
        kept = _owner_userns.get((uid, gid))
        if kept is None:
            kept = _owner_userns[uid, gid] = KeptFd(lambda: owner_only_userns(uid, gid))
    return kept.get()


def owner_only_userns(uid: int, gid: int) -> int:
    """A user namespace (its descriptor) whose only ids are inside 0 = host ``uid`` and
    ``gid``: an idmapped mount through it shows host root's files as that owner's and
    makes that owner's new files host root's, while every other host owner shows as the
    overflow id and cannot be written as. Host root only (it writes the maps). Made by a
    child that exists only until the namespace is open."""
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    try:
        pid = clone_into_namespaces(linux.CLONE_NEWUSER)
    except BaseException:
        os.close(read_end)
        os.close(write_end)
        raise
    if pid == 0:  # pragma: no cover - the child: wait for the parent to be done, go
        try:
            close_other_fds([read_end])
            os.read(read_end, 1)
        finally:
            os._exit(0)
    os.close(read_end)
    try:
        write_idmap(pid, IdMap.single(uid, gid))
        return os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        os.close(write_end)
        os.waitpid(pid, 0)


def close_all(fds: list[int]) -> None:
    for fd in fds:
        os.close(fd)
