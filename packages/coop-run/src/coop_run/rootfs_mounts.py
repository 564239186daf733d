"""The sandbox's filesystem (SPEC 4.2): a pure plan of mount operations, and its executor.

``plan_mounts()`` turns a ``MountSpec`` into a list of operations; tests check the plan
without namespaces. ``execute()`` runs it in the init (PID 1 of the sandbox, already in
its own user and mount namespaces), ending with ``pivot_root`` and the old root detached.

Every target is a path *inside* the new root, resolved there with ``resolve_in_root`` so
that a symlink in an image (``/workspace -> /etc``) can never steer a mount onto the
host: before the pivot, an absolute symlink would otherwise resolve against the host's /.
Missing mount points are created in the merged tree, so they land in this session's
upper directory and vanish with it.
"""

# Runs in a freshly forked process on str paths and raw syscalls, on purpose.
# ruff: noqa: PTH102, PTH108, PTH110, PTH112, PTH114, PTH115, PTH118, PTH119, PTH120, PTH211

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from coop_build import linux
from coop_build.rootlayout import DEV_LINKS, DEV_NODES, HOST_DIRS
from coop_build.rootpath import resolve_in_root

_UNSAFE_IN_OPTIONS = (",", ":", "\n", "\\")

NOSUID_NODEV = linux.MS_NOSUID | linux.MS_NODEV


@dataclass(frozen=True)
class MountSpec:
    """What the sandbox's root is made of (host paths absolute; ``*_inside`` in the root)."""

    root: str                      # empty host directory the overlay is mounted on
    lowers: tuple[str, ...]        # build layers, bottom first
    upper: str
    work: str
    host_image: bool = False       # image = "host": the host's /usr, /bin, /lib*, /etc read-only
    workspace: str | None = None   # host path, bound read-write at ``workspace_inside``
    workspace_inside: str = "/workspace"
    persist: tuple[tuple[str, str], ...] = ()   # (host dir, path inside), read-write
    etc_files: tuple[tuple[str, str], ...] = ()  # (host file, path inside), read-only
    host_dirs: tuple[str, ...] = field(default=HOST_DIRS)


class SpecError(ValueError):
    """A malformed spec on the supervisor -> init channel (never from a user)."""


def spec_to_json(spec: MountSpec) -> dict[str, object]:
    """The spec as the supervisor sends it to a waiting init (``spec_from_json``)."""
    return {"root": spec.root, "lowers": list(spec.lowers), "upper": spec.upper,
            "work": spec.work, "host_image": spec.host_image, "workspace": spec.workspace,
            "workspace_inside": spec.workspace_inside,
            "persist": [list(pair) for pair in spec.persist],
            "etc_files": [list(pair) for pair in spec.etc_files],
            "host_dirs": list(spec.host_dirs)}


def _strs(value: object, what: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise SpecError(f"mount spec: {what} must be a list of strings")
    return tuple(value)


def _pairs(value: object, what: str) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, list):
        raise SpecError(f"mount spec: {what} must be a list of pairs")
    pairs = []
    for pair in value:
        items = _strs(pair, what)
        if len(items) != 2:
            raise SpecError(f"mount spec: {what} must be a list of pairs")
        pairs.append((items[0], items[1]))
    return tuple(pairs)


def _str(table: dict[str, object], key: str) -> str:
    value = table.get(key)
    if not isinstance(value, str):
        raise SpecError(f"mount spec: {key} must be a string")
    return value


def spec_from_json(table: dict[str, object]) -> MountSpec:
    """``spec_to_json`` undone; ``SpecError`` for anything malformed."""
    workspace = table.get("workspace")
    if workspace is not None and not isinstance(workspace, str):
        raise SpecError("mount spec: workspace must be a string")
    host_image = table.get("host_image")
    if not isinstance(host_image, bool):
        raise SpecError("mount spec: host_image must be a boolean")
    return MountSpec(root=_str(table, "root"), lowers=_strs(table.get("lowers"), "lowers"),
                     upper=_str(table, "upper"), work=_str(table, "work"),
                     host_image=host_image, workspace=workspace,
                     workspace_inside=_str(table, "workspace_inside"),
                     persist=_pairs(table.get("persist"), "persist"),
                     etc_files=_pairs(table.get("etc_files"), "etc_files"),
                     host_dirs=_strs(table.get("host_dirs"), "host_dirs"))


@dataclass(frozen=True)
class MakePrivate:
    """Stop mount events propagating between the sandbox and the host."""


@dataclass(frozen=True)
class Overlay:
    target: str
    lowers: tuple[str, ...]
    upper: str
    work: str


@dataclass(frozen=True)
class FreshMount:
    """A new filesystem instance (proc, tmpfs, devpts) at ``target`` inside the root."""

    fstype: str
    target: str
    flags: int
    data: str | None = None


@dataclass(frozen=True)
class Bind:
    """Bind a host path at ``target`` inside the root; ``kind`` is what the mount point is."""

    source: str
    target: str
    kind: str = "dir"            # "dir" or "file"
    readonly: bool = False
    recursive: bool = False
    optional: bool = False       # skip quietly when the source or mount point cannot exist


@dataclass(frozen=True)
class Symlink:
    target: str                  # the link's path inside the root
    points_to: str


@dataclass(frozen=True)
class HostSymlinkOrBind:
    """image = "host": mirror a top-level host entry (symlink stays a symlink, dir is bound)."""

    name: str


@dataclass(frozen=True)
class PivotRoot:
    """Make the overlay the root and detach the old one."""


Op = MakePrivate | Overlay | FreshMount | Bind | Symlink | HostSymlinkOrBind | PivotRoot


def check_layer_path(path: str) -> None:
    """Overlay options are comma/colon separated: paths holding those cannot be used."""
    if any(ch in path for ch in _UNSAFE_IN_OPTIONS):
        raise ValueError(f"path cannot be used in an overlay mount: {path!r}")


def plan_mounts(spec: MountSpec) -> list[Op]:
    """The operations of SPEC 4.2, in order."""
    for path in (*spec.lowers, spec.upper, spec.work):
        check_layer_path(path)
    if not spec.lowers:
        raise ValueError("an overlay root needs at least one lower directory")
    ops: list[Op] = [
        MakePrivate(),
        Overlay(spec.root, spec.lowers, spec.upper, spec.work),
        FreshMount("proc", "/proc", NOSUID_NODEV | linux.MS_NOEXEC),
        FreshMount("tmpfs", "/dev", linux.MS_NOSUID | linux.MS_NOEXEC, "mode=0755"),
    ]
    ops += [Bind(f"/dev/{node}", f"/dev/{node}", kind="file") for node in DEV_NODES]
    ops += [Symlink(f"/dev/{name}", link) for name, link in DEV_LINKS]
    ops += [
        FreshMount("devpts", "/dev/pts", linux.MS_NOSUID | linux.MS_NOEXEC,
                   "newinstance,ptmxmode=0666,mode=0620"),
        FreshMount("tmpfs", "/dev/shm", NOSUID_NODEV, "mode=1777"),
        FreshMount("tmpfs", "/tmp", NOSUID_NODEV, "mode=1777"),
    ]
    if spec.host_image:
        ops += [HostSymlinkOrBind(name) for name in spec.host_dirs]
    if spec.workspace is not None:
        ops.append(Bind(spec.workspace, spec.workspace_inside))
    ops += [Bind(source, inside) for source, inside in spec.persist]
    ops += [Bind(source, inside, kind="file", readonly=True, optional=spec.host_image)
            for source, inside in spec.etc_files]
    ops.append(PivotRoot())
    return ops


def split_plan(ops: Sequence[Op], late_sources: Iterable[str]) -> tuple[list[Op], ...]:
    """The plan in three parts, so the init overlaps its work with the supervisor's:

    - before the overlay: needs capabilities only, no mapped ids (overlayfs refuses a
      mounter whose uid is not mapped yet: EACCES);
    - from the overlay to the first bind of a ``late_sources`` path: needs the maps;
    - the rest: needs those sources, which the supervisor creates meanwhile.
    """
    late = set(late_sources)
    overlay = next((i for i, op in enumerate(ops) if isinstance(op, Overlay)), 0)
    first_late = next((i for i, op in enumerate(ops)
                       if i > overlay and isinstance(op, Bind) and op.source in late), len(ops))
    return list(ops[:overlay]), list(ops[overlay:first_late]), list(ops[first_late:])


# --- execution (in the init, before pivot_root) ---------------------------------------


def ensure_target(root: str, path: str, kind: str) -> str:
    """The host-side path of mount point ``path`` inside ``root``, created if missing."""
    rel = resolve_in_root(root, path)
    parts = rel.split("/") if rel else []
    for depth in range(1, len(parts)):
        sub = os.path.join(root, *parts[:depth])
        if not os.path.isdir(sub):
            os.mkdir(sub, 0o755)
    target = os.path.join(root, rel) if rel else root
    if not os.path.lexists(target):
        if kind == "dir":
            os.mkdir(target, 0o755)
        else:
            os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
    return target


def _overlay(op: Overlay) -> None:
    # Relative layer paths keep the option string under a page however many layers.
    base = os.path.commonpath([*op.lowers, op.upper, op.work])
    os.chdir(base)
    lowers = ":".join(os.path.relpath(p, base) for p in reversed(op.lowers))
    data = (f"lowerdir={lowers},upperdir={os.path.relpath(op.upper, base)},"
            f"workdir={os.path.relpath(op.work, base)},userxattr")
    linux.mount("overlay", op.target, "overlay", 0, data)
    os.chdir("/")


def _host_entry(root: str, name: str) -> None:
    host = f"/{name}"
    if os.path.islink(host):
        inside = os.path.join(root, name)
        if os.path.lexists(inside) and not os.path.islink(inside):
            return  # the layers have a real directory there; leave it
        if os.path.islink(inside):
            os.unlink(inside)
        os.symlink(os.readlink(host), inside)
    elif os.path.isdir(host):
        linux.bind_mount(host, ensure_target(root, host, "dir"), readonly=True, recursive=True)


def _bind(root: str, op: Bind) -> None:
    if op.optional and not os.path.exists(op.source):
        return
    try:
        target = ensure_target(root, op.target, op.kind)
    except OSError:
        if op.optional:
            return
        raise
    linux.bind_mount(op.source, target, readonly=op.readonly, recursive=op.recursive)


def execute(ops: Sequence[Op], root: str) -> None:
    """Run the plan; ``root`` is the host directory the overlay goes on."""
    for op in ops:
        if isinstance(op, MakePrivate):
            linux.mount(None, "/", None, linux.MS_REC | linux.MS_PRIVATE)
        elif isinstance(op, Overlay):
            _overlay(op)
        elif isinstance(op, FreshMount):
            target = ensure_target(root, op.target, "dir")
            linux.mount(op.fstype, target, op.fstype, op.flags, op.data)
        elif isinstance(op, Bind):
            _bind(root, op)
        elif isinstance(op, Symlink):
            rel = resolve_in_root(root, os.path.dirname(op.target))
            os.symlink(op.points_to, os.path.join(root, rel, os.path.basename(op.target)))
        elif isinstance(op, HostSymlinkOrBind):
            _host_entry(root, op.name)
        else:
            os.chdir(root)
            linux.pivot_root(".", ".")
            linux.umount2(".", linux.MNT_DETACH)
            os.chdir("/")
