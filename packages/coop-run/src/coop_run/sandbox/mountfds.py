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
"""

from __future__ import annotations

import os
from typing import Any

from coop_build import linux
from coop_run.errors import SandboxError


class MountFds:
    """Opens the descriptors of one init's set-up records (``for_record``)."""

    def __init__(self, init_pid: int, *, binds_by_path: bool = False) -> None:
        """``binds_by_path``: the init may walk the host paths itself (a plain user's,
        which is that user): binds other than idmapped ones carry no descriptor."""
        self.init_pid = init_pid
        self.binds_by_path = binds_by_path
        self._root: int | None = None    # /proc/<init>/root: paths are opened below it
        self._userns: int | None = None

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
        if record["idmapped"]:
            return [self._idmapped(record["source"])]
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

    def _idmapped(self, path: str) -> int:
        try:
            if self._userns is None:
                self._userns = os.open(f"/proc/{self.init_pid}/ns/user",
                                       os.O_RDONLY | os.O_CLOEXEC)
            return linux.idmapped_clone(path, self._userns)
        except OSError as exc:
            raise SandboxError(
                f"cannot show {path} to root's sandbox with its owners mapped "
                f"({exc.strerror}): root's workspace must be on a filesystem that "
                "supports idmapped mounts (ext4, xfs, btrfs, tmpfs)") from exc

    def close(self) -> None:
        for fd in (self._root, self._userns):
            if fd is not None:
                os.close(fd)
        self._root = self._userns = None


def close_all(fds: list[int]) -> None:
    for fd in fds:
        os.close(fd)
