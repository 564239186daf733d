"""``image = "host"`` as the lowest layer of the root (SPEC 13), for steps and sessions.

Each of the host's own directories that is a real directory (``rootlayout.HOST_DIRS``,
and the package database, ``HOST_STATE_DIRS``) is the lowest layer of an overlay of its
own, mounted at its place: above it the same subtree of every build layer, and on top
the step's or the session's upper. A step's writes there land in its layer; the host is
never written. A top-level entry that is a symlink on the host (``/bin -> usr/bin`` on a
merged-/usr system) is that symlink inside. One overlay with the host's ``/`` as its
lowest layer cannot do it: a layer is one filesystem (what is mounted below it does not
show), and ``/`` holds the rest of the host too.

The host's files belong to host root, whom no sandbox maps (a plain user cannot; root's
sandboxes are coop's own id range), and uid 0 inside may not add or remove an entry in
a directory of an unmapped owner: its capabilities do not reach such inodes. Overlay
takes a merged directory's owner and mode from its highest layer, so the host image's
base layer holds a *skeleton* (``make_skeleton``): each directory of those trees again,
empty, with the host's mode but the sandbox root's own. Inside root may then add,
replace and remove entries anywhere; the host's files stay host root's, so what the
sandbox may read or change of them is what it could before (a file it may not read it
cannot copy up either, one it may not write it cannot change in place or hard-link). A
directory it may not enter is empty and opaque in the skeleton (hidden, and usable);
an empty file it may not read (dpkg's and apt's locks) is an empty file of its own.

The skeleton is as old as the base layer: a directory the host gained since then is
host root's inside (nothing can be added to it), one it lost shows empty. The base
step's key holds ``system_identity`` (the release and the shape of the host's
directories), so a release upgrade builds anew; routine updates do not (``coop rebuild``
does).
"""

# os and str paths: the session start path uses this; the walk is over large trees.
# ruff: noqa: PTH101, PTH102, PTH103, PTH112, PTH114, PTH115, PTH116, PTH118, PTH120, PTH123

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass

from coop_build.rootlayout import HOST_DIRS, HOST_STATE_DIRS

SKELETON_FORMAT = 1
"""Part of the host image's base key: bump when what ``make_skeleton`` makes changes."""
OPAQUE_XATTR = "user.overlay.opaque"  # overlay mounted with userxattr reads it
_OS_RELEASE = ("/etc/os-release", "/usr/lib/os-release")


@dataclass(frozen=True)
class HostLayout:
    """The host's own directories as an ``image = "host"`` root shows them."""

    dirs: tuple[str, ...]               # real directories (relative): each an overlay
    links: tuple[tuple[str, str], ...]  # top-level symlinks: (name, where it points)


def host_layout(host_root: str = "/") -> HostLayout:
    """Which of ``HOST_DIRS`` and ``HOST_STATE_DIRS`` the host has, and as what. A state
    directory counts only when no component of its path is a symlink (its place inside
    would differ from the host's)."""
    dirs: list[str] = []
    links: list[tuple[str, str]] = []
    for rel in (*HOST_DIRS, *HOST_STATE_DIRS):
        path = os.path.join(host_root, rel)
        if "/" not in rel and os.path.islink(path):
            links.append((rel, os.readlink(path)))
        elif os.path.isdir(path) and os.path.realpath(path) == os.path.normpath(path):
            dirs.append(rel)
    return HostLayout(tuple(dirs), tuple(links))


def system_identity(layout: HostLayout | None = None) -> str:
    """The host's release and architecture, and the shape of its directories: what a host
    image's base layer depends on (``"debian 12 x86_64; usr etc var/lib/dpkg; bin ->
    usr/bin"``). Not the installed packages: those change every day."""
    layout = layout or host_layout()
    release = _os_release()
    name = release.get("ID", "linux")
    version = (release.get("VERSION_ID") or release.get("VERSION_CODENAME")
               or release.get("BUILD_ID") or "")
    links = " ".join(f"{name} -> {target}" for name, target in layout.links)
    return f"{name} {version} {os.uname().machine}; {' '.join(layout.dirs)}; {links}".strip()


def _os_release() -> dict[str, str]:
    for path in _OS_RELEASE:
        try:
            with open(path, encoding="utf-8", errors="replace") as fh:
                text = fh.read()
        except OSError:
            continue
        values: dict[str, str] = {}
        for line in text.splitlines():
            key, sep, value = line.partition("=")
            if sep and key.strip().isidentifier():
                values[key.strip()] = value.strip().strip("\"'")
        return values
    return {}


def layer_lowers(rel: str, layers: Sequence[str]) -> tuple[str, ...]:
    """The lowers of host directory ``rel``'s overlay, bottom first: the host's directory,
    then that subtree of each layer (``layers`` bottom first) that has it."""
    found = [f"{layer}/{rel}" for layer in layers if os.path.isdir(f"{layer}/{rel}")]
    return (f"/{rel}", *found)


# --- the skeleton -------------------------------------------------------------------------


def make_skeleton(fs: str, layout: HostLayout, mounter: tuple[int, int]) -> int:
    """Write the skeleton of ``layout``'s directories into layer directory ``fs`` (see the
    module docstring); the number of entries made. ``mounter`` is the host (uid, gid) the
    sandbox's overlays are mounted as (its inside root): what it may enter is copied,
    what it may not is left empty and opaque. Everything made is the caller's: root hands
    the layer to coop's range afterwards, as any layer it makes."""
    old = os.umask(0)
    try:
        made = 0
        for rel in layout.dirs:
            parent = os.path.dirname(rel)
            if parent:
                os.makedirs(os.path.join(fs, parent), 0o755, exist_ok=True)
            made += _copy_dirs(f"/{rel}", os.path.join(fs, rel), mounter,
                               locks=rel in HOST_STATE_DIRS)
        return made
    finally:
        os.umask(old)


def _copy_dirs(source: str, dest: str, mounter: tuple[int, int], *, locks: bool) -> int:
    """The directories below ``source`` (one filesystem) again under ``dest``; with
    ``locks``, also the empty files ``mounter`` may not read."""
    top = os.stat(source)
    modes: list[tuple[str, int]] = []  # (dir, its final mode), set last, deepest first
    _mkdir(dest, top.st_mode, modes)
    stack = [(source, dest, top)]
    made = 1
    while stack:
        src, dst, st = stack.pop()
        if not _may(st, mounter, 0o5):
            os.setxattr(dst, OPAQUE_XATTR, b"y")  # its contents stay the host's secret
            continue
        try:
            entries = list(os.scandir(src))
        except OSError:
            os.setxattr(dst, OPAQUE_XATTR, b"y")
            continue
        for entry in entries:
            path = os.path.join(dst, entry.name)
            if entry.is_dir(follow_symlinks=False):
                child = entry.stat(follow_symlinks=False)
                if child.st_dev != top.st_dev:
                    continue  # a mount below: the overlay shows its empty mount point
                _mkdir(path, child.st_mode, modes)
                stack.append((entry.path, path, child))
                made += 1
            elif locks and entry.is_file(follow_symlinks=False):
                child = entry.stat(follow_symlinks=False)
                if child.st_size == 0 and not _may(child, mounter, 0o4):
                    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                                     stat.S_IMODE(child.st_mode)))
                    made += 1
    for path, mode in reversed(modes):
        os.chmod(path, mode)
    return made


def _mkdir(path: str, host_mode: int, modes: list[tuple[str, int]]) -> None:
    """``path`` with the host's mode, kept writable for us until the walk is done."""
    mode = stat.S_IMODE(host_mode)
    made = (mode & 0o777) | 0o700
    os.mkdir(path, made)
    if made != mode:
        modes.append((path, mode))


def _may(st: os.stat_result, who: tuple[int, int], bits: int) -> bool:
    """Whether ``who`` (uid, gid; no other groups, as inside a sandbox) has all of
    ``bits`` (``0o5``: read and search) on a file of ``st``."""
    uid, gid = who
    if st.st_uid == uid:
        granted = st.st_mode >> 6
    elif st.st_gid == gid:
        granted = st.st_mode >> 3
    else:
        granted = st.st_mode
    return granted & bits == bits
