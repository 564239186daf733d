"""Overlay upper dir <-> OCI layer tar, run inside the build's user namespace.

Layer dirs hold files of sub-uids that the host user cannot read, and their owners only
make sense as the build namespace sees them, so ``export`` runs this module there::

    python -m coop_build._layertar export SRC OUT.tar.gz RESULT.json [IDMAP.json]
    python -m coop_build._layertar import IN.tar.gz DEST RESULT.json

Root runs it on the host instead (root's namespaces are coop's id range, which may not
walk root's directories) and passes the map: export then writes each owner as the id
it is inside (``IdMap.json``: ``{"uid_map": [[inside, outside, count], ...], ...}``);
root's importer hands what it unpacked to the range afterwards.

Export translates overlay's format to OCI's (char 0:0 -> ``.wh.NAME``, opaque dir ->
``.wh..wh..opq``, ``*.overlay.*`` xattrs dropped) and is deterministic: entries sorted,
uname/gname empty, gzip header mtime 0, so the same layer always gets the same digest.
Import does the reverse into a fresh directory and refuses any path leaving it.
Only the standard library is imported here: this runs as a fresh interpreter per layer.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import json
import os
import stat
import sys
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, Protocol

from coop_build.idmap import inside_id

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
_OVERLAY_XATTRS = ("user.overlay.", "trusted.overlay.")
_XATTR_PAX = "SCHILY.xattr."
_GZIP_LEVEL = 6
_CHUNK = 1 << 20


class LayerTarError(Exception):
    """A layer cannot be converted (unsafe path, unsupported entry)."""


class _Sink(Protocol):
    def write(self, data: bytes, /) -> int: ...

    def flush(self) -> None: ...


class _HashingWriter:
    """A write-only file object that hashes and counts what passes through it."""

    def __init__(self, sink: _Sink) -> None:
        self._sink = sink
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        self.size += len(data)
        self._sink.write(data)
        return len(data)

    def flush(self) -> None:
        self._sink.flush()

    def digest(self) -> str:
        return "sha256:" + self.sha.hexdigest()


def _is_overlay_xattr(name: str) -> bool:
    return name.startswith(_OVERLAY_XATTRS)


def _xattrs(path: Path) -> dict[str, bytes]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.EPERM):
            return {}
        raise
    found: dict[str, bytes] = {}
    for name in sorted(names):
        try:
            found[name] = os.getxattr(path, name, follow_symlinks=False)
        except OSError as exc:
            # trusted.* is unreadable without CAP_SYS_ADMIN; a racing removal is harmless.
            if exc.errno not in (errno.ENODATA, errno.EPERM, errno.ENOTSUP):
                raise
    return found


def _is_whiteout(st: os.stat_result, xattrs: dict[str, bytes]) -> bool:
    if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
        return True
    # overlayfs >= 6.7 can also mark whiteouts with an xattr on an empty regular file.
    return stat.S_ISREG(st.st_mode) and any(
        name.endswith("overlay.whiteout") for name in xattrs
    )


def _is_opaque(xattrs: dict[str, bytes]) -> bool:
    return any(
        name.endswith("overlay.opaque") and value in (b"y", b"x") for name, value in xattrs.items()
    )


def _walk(root: Path, rel: str = "") -> Iterator[tuple[str, Path]]:
    """Yield (relative name, absolute path) depth-first in sorted name order."""
    with os.scandir(root / rel if rel else root) as it:
        names = sorted(entry.name for entry in it)
    for name in names:
        child_rel = f"{rel}/{name}" if rel else name
        path = root / child_rel
        yield child_rel, path
        if stat.S_ISDIR(path.lstat().st_mode):
            yield from _walk(root, child_rel)


Owners = Callable[[int, int], tuple[int, int]]
OVERFLOW_ID = 65534  # what the kernel shows for an owner a namespace does not map


def _as_seen(uid: int, gid: int) -> tuple[int, int]:
    return uid, gid


def inside_owners(uid_map: list[list[int]], gid_map: list[list[int]]) -> Owners:
    """Host owners -> the ids a namespace with these maps sees (the overflow id when
    unmapped), as ``stat`` inside it would report them."""
    def inside(mapping: list[list[int]], host: int) -> int:
        found = inside_id(mapping, host)
        return OVERFLOW_ID if found is None else found

    return lambda uid, gid: (inside(uid_map, uid), inside(gid_map, gid))


def _base_info(name: str, st: os.stat_result, owners: Owners) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mode = stat.S_IMODE(st.st_mode)
    info.uid, info.gid = owners(st.st_uid, st.st_gid)
    info.uname = ""
    info.gname = ""
    info.mtime = int(st.st_mtime)
    return info


def write_layer(src: Path, out: IO[bytes], owners: Owners = _as_seen) -> tuple[str, str, int]:
    """Write ``src`` (an overlay upper dir) as a gzip OCI layer to ``out``; ``owners``
    turns the owners ``stat`` reports into those the layer records.

    Returns ``(diff_id, digest, size)``: the sha256 of the plain tar, and the sha256 and
    length of the gzip stream.
    """
    compressed = _HashingWriter(out)
    # filename="" and mtime=0 keep the gzip header free of anything that varies.
    with gzip.GzipFile(filename="", mode="wb", fileobj=compressed,
                       compresslevel=_GZIP_LEVEL, mtime=0) as gz:
        plain = _HashingWriter(gz)
        with tarfile.open(fileobj=plain, mode="w|", format=tarfile.PAX_FORMAT,  # type: ignore[call-overload]
                          encoding="utf-8") as tar:
            _add_tree(tar, src, owners)
    return plain.digest(), compressed.digest(), compressed.size


def _add_tree(tar: tarfile.TarFile, root: Path, owners: Owners) -> None:
    seen_inodes: dict[tuple[int, int], str] = {}
    for rel, path in _walk(root):
        st = os.lstat(path)
        xattrs = _xattrs(path)
        parent, _, base = rel.rpartition("/")
        if _is_whiteout(st, xattrs):
            wh_name = f"{parent}/{WHITEOUT_PREFIX}{base}" if parent else WHITEOUT_PREFIX + base
            info = _base_info(wh_name, st, owners)
            info.type = tarfile.REGTYPE
            info.mode = 0
            tar.addfile(info)
            continue
        kept = {k: v for k, v in xattrs.items() if not _is_overlay_xattr(k)}
        info = _base_info(rel, st, owners)
        if kept:
            # tarfile decodes pax values as UTF-8 with surrogateescape; binary values survive.
            info.pax_headers = {
                _XATTR_PAX + k: v.decode("utf-8", "surrogateescape") for k, v in kept.items()
            }
        mode = st.st_mode
        if stat.S_ISDIR(mode):
            info.type = tarfile.DIRTYPE
            tar.addfile(info)
            if _is_opaque(xattrs):
                opq = _base_info(f"{rel}/{OPAQUE_MARKER}", st, owners)
                opq.type = tarfile.REGTYPE
                opq.mode = 0
                tar.addfile(opq)
        elif stat.S_ISLNK(mode):
            info.type = tarfile.SYMTYPE
            info.linkname = str(path.readlink())
            tar.addfile(info)
        elif stat.S_ISREG(mode):
            key = (st.st_dev, st.st_ino)
            if st.st_nlink > 1 and key in seen_inodes:
                info.type = tarfile.LNKTYPE
                info.linkname = seen_inodes[key]
                tar.addfile(info)
                continue
            if st.st_nlink > 1:
                seen_inodes[key] = rel
            info.type = tarfile.REGTYPE
            info.size = st.st_size
            with path.open("rb") as f:
                tar.addfile(info, f)
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            info.type = tarfile.CHRTYPE if stat.S_ISCHR(mode) else tarfile.BLKTYPE
            info.devmajor = os.major(st.st_rdev)
            info.devminor = os.minor(st.st_rdev)
            tar.addfile(info)
        elif stat.S_ISFIFO(mode):
            info.type = tarfile.FIFOTYPE
            tar.addfile(info)
        # Sockets are runtime artefacts: like tar and umoci, leave them out.


def _safe_parts(name: str) -> list[str]:
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if not parts or any(p == ".." for p in parts):
        raise LayerTarError(f"layer entry {name!r} leaves the layer directory")
    return parts


def _parent_fd(root_fd: int, parts: list[str]) -> int:
    """Open the entry's parent directory without following symlinks, making missing dirs."""
    fd = os.dup(root_fd)
    try:
        for part in parts[:-1]:
            try:
                nxt = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            except FileNotFoundError:
                os.mkdir(part, 0o755, dir_fd=fd)
                nxt = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise LayerTarError(
                        f"layer entry {'/'.join(parts)!r} goes through a non-directory"
                    ) from None
                raise
            os.close(fd)
            fd = nxt
    except BaseException:
        os.close(fd)
        raise
    return fd


def _remove(dir_fd: int, name: str) -> None:
    try:
        st = os.lstat(name, dir_fd=dir_fd)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        raise LayerTarError(f"layer replaces directory {name!r} with another type")
    os.unlink(name, dir_fd=dir_fd)


def _apply_meta(dir_fd: int, name: str, info: tarfile.TarInfo, *, is_link: bool) -> None:
    try:
        os.chown(name, info.uid, info.gid, dir_fd=dir_fd, follow_symlinks=False)
    except OSError as exc:
        # A single-id namespace cannot own other ids: keep ours, as umoci --rootless does.
        if exc.errno not in (errno.EINVAL, errno.EPERM):
            raise
    if is_link:
        return
    for key, value in info.pax_headers.items():
        if key.startswith(_XATTR_PAX):
            attr = key[len(_XATTR_PAX):]
            try:
                # setxattr has no dir_fd: go through the already-open parent instead.
                os.setxattr(f"/proc/self/fd/{dir_fd}/{name}", attr,
                            value.encode("utf-8", "surrogateescape"), follow_symlinks=False)
            except OSError as exc:
                if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EINVAL):
                    raise
    os.chmod(name, info.mode & 0o7777, dir_fd=dir_fd)


def read_layer(layer: IO[bytes], dest: Path) -> list[tuple[str, int]]:
    """Unpack an OCI layer into ``dest`` (a new overlay upper dir).

    Returns directory mtimes to restore last (children change them).
    """
    dest.mkdir(mode=0o755)
    root_fd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY)
    dir_times: list[tuple[str, int]] = []
    try:
        with tarfile.open(fileobj=layer, mode="r|*") as tar:
            for info in tar:
                _read_entry(tar, info, root_fd, dir_times)
    finally:
        os.close(root_fd)
    return dir_times


def _read_entry(tar: tarfile.TarFile, info: tarfile.TarInfo, root_fd: int,
                dir_times: list[tuple[str, int]]) -> None:
    parts = _safe_parts(info.name)
    rel = "/".join(parts)
    name = parts[-1]
    if len(parts) == 1 and name == OPAQUE_MARKER:
        return  # an opaque root has nothing below it to hide in an overlay
    fd = _parent_fd(root_fd, parts)
    try:
        if name == OPAQUE_MARKER:
            os.setxattr(f"/proc/self/fd/{fd}", "user.overlay.opaque", b"y")
            return
        if name.startswith(WHITEOUT_PREFIX):
            target = name[len(WHITEOUT_PREFIX):]
            _safe_parts(target)
            _remove(fd, target)
            os.mknod(target, stat.S_IFCHR | 0o600, os.makedev(0, 0), dir_fd=fd)
            os.utime(target, (info.mtime, info.mtime), dir_fd=fd, follow_symlinks=False)
            return
        if info.isdir():
            try:
                st = os.lstat(name, dir_fd=fd)
            except FileNotFoundError:
                os.mkdir(name, 0o700, dir_fd=fd)
            else:
                if not stat.S_ISDIR(st.st_mode):
                    _remove(fd, name)
                    os.mkdir(name, 0o700, dir_fd=fd)
            _apply_meta(fd, name, info, is_link=False)
            dir_times.append((rel, int(info.mtime)))
            return
        _remove(fd, name)
        if info.issym():
            os.symlink(info.linkname, name, dir_fd=fd)
        elif info.islnk():
            target_parts = _safe_parts(info.linkname)
            tfd = _parent_fd(root_fd, target_parts)
            try:
                os.link(target_parts[-1], name, src_dir_fd=tfd, dst_dir_fd=fd,
                        follow_symlinks=False)
            finally:
                os.close(tfd)
            return  # a hard link shares the target's metadata
        elif info.isreg():
            wfd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600,
                          dir_fd=fd)
            with os.fdopen(wfd, "wb") as out:
                src = tar.extractfile(info)
                if src is None:
                    raise LayerTarError(f"layer entry {rel!r} has no data")
                while chunk := src.read(_CHUNK):
                    out.write(chunk)
        elif info.ischr() or info.isblk() or info.isfifo():
            kind = stat.S_IFCHR if info.ischr() else stat.S_IFBLK if info.isblk() else stat.S_IFIFO
            try:
                os.mknod(name, kind | 0o600, os.makedev(info.devmajor, info.devminor), dir_fd=fd)
            except PermissionError:
                # mknod of real devices is refused in a user namespace: keep an empty file,
                # as umoci --rootless does; sessions bind /dev from the host anyway.
                os.close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600, dir_fd=fd))
        else:
            raise LayerTarError(f"layer entry {rel!r} has unsupported type {info.type!r}")
        _apply_meta(fd, name, info, is_link=info.issym())
        os.utime(name, (info.mtime, info.mtime), dir_fd=fd, follow_symlinks=False)
    finally:
        os.close(fd)


def _restore_dir_times(dest: Path, dir_times: list[tuple[str, int]]) -> None:
    for rel, mtime in reversed(dir_times):
        os.utime(dest / rel, (mtime, mtime), follow_symlinks=False)


def main(argv: list[str]) -> int:
    """Entry point for the subprocess; the result goes to a JSON file the parent reads."""
    if len(argv) not in (4, 5) or argv[0] not in ("export", "import"):
        sys.stderr.write("usage: _layertar export SRC OUT RESULT [IDMAP] | "
                         "import IN DEST RESULT\n")
        return 2
    verb, first, second, result_path = argv[:4]
    owners: Owners = _as_seen
    if len(argv) == 5:
        maps = json.loads(Path(argv[4]).read_text(encoding="utf-8"))
        owners = inside_owners(maps["uid_map"], maps["gid_map"])
    result: dict[str, Any]
    try:
        if verb == "export":
            with Path(second).open("wb") as out:
                diff_id, digest, size = write_layer(Path(first), out, owners)
            result = {"diff_id": diff_id, "digest": digest, "size": size}
        else:
            dest = Path(second)
            with Path(first).open("rb") as layer:
                times = read_layer(layer, dest)
            _restore_dir_times(dest, times)
            result = {}
    except (LayerTarError, OSError, tarfile.TarError, EOFError, gzip.BadGzipFile) as exc:
        result = {"error": f"{type(exc).__name__}: {exc}"}
    with Path(result_path).open("w", encoding="utf-8") as f:
        json.dump(result, f)
    return 0 if "error" not in result else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
