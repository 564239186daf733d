"""The sandbox's filesystem (SPEC 4.2): a pure plan of mount operations, as records.

``plan_mounts()`` turns a ``MountSpec`` into a list of operations; ``plan_records()``
turns those into the set-up records the sandbox's init (``coop-init``, already in its
own user and mount namespaces) executes one by one, ending with ``pivot_root`` and the
old root detached. Tests check the plan and the records without namespaces.

Every target is a path *inside* the new root, resolved there by ``coop-init`` as
``coop_build.rootpath.resolve_in_root`` does, so that a symlink in an image
(``/workspace -> /etc``) can never steer a mount onto the host: before the pivot, an
absolute symlink would otherwise resolve against the host's /. Missing mount points are
created in the merged tree, so they land in this session's upper directory and vanish
with it. The layers (and for root every bind's source) reach the init as descriptors
the supervisor opens (``sandbox.mountfds``); the records name them for messages.

With ``image = "host"`` each of the host's own directories is an overlay of its own at
its place, the host's directory its lowest layer (``coop_build.hostlayer``): the plan
takes them as ``HostLayer``s, worked out by the caller.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from coop_build import linux
from coop_build.rootlayout import DEV_LINKS, DEV_NODES

_UNSAFE_IN_OPTIONS = (",", ":", "\n", "\\")

NOSUID_NODEV = linux.MS_NOSUID | linux.MS_NODEV


@dataclass(frozen=True)
class HostLayer:
    """image = "host": the overlay at one of the host's directories (relative to /)."""

    rel: str
    lowers: tuple[str, ...]        # the host's directory, then the layers' (bottom first)
    upper: str
    work: str


@dataclass(frozen=True)
class MountSpec:
    """What the sandbox's root is made of (host paths absolute; ``*_inside`` in the root)."""

    root: str                      # empty host directory the overlay is mounted on
    lowers: tuple[str, ...]        # build layers, bottom first
    upper: str
    work: str
    host_image: bool = False       # image = "host": the host's directories as lowest layers
    workspace: str | None = None   # host path, bound read-write at ``workspace_inside``
    workspace_inside: str = "/workspace"
    persist: tuple[tuple[str, str], ...] = ()   # (host dir, path inside), read-write
    etc_files: tuple[tuple[str, str], ...] = ()  # (host file, path inside), read-only
    # (host path, path inside, "file" or "dir"), read-only: what the session inherits
    readonly_binds: tuple[tuple[str, str, str], ...] = ()
    hidden: tuple[str, ...] = ()   # paths inside covered by an empty read-only tmpfs
    # host_image: an overlay per host directory, and the top-level names that are
    # symlinks on the host (mirrored as symlinks)
    host_layers: tuple[HostLayer, ...] = ()
    host_links: tuple[str, ...] = ()
    # host_image: the host's secrets under its directories (path inside, is a
    # directory), and the empty file bound read-only over each file among them (a tmpfs
    # covers a directory).
    secrets: tuple[tuple[str, bool], ...] = ()
    blank: str | None = None
    idmapped_workspace: bool = False  # root: host owners show through the sandbox's map


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
    cover: bool = False          # hides what is there: skipped where the init cannot reach


@dataclass(frozen=True)
class Bind:
    """Bind a host path at ``target`` inside the root; ``kind`` is what the mount point is."""

    source: str
    target: str
    kind: str = "dir"            # "dir" or "file"
    readonly: bool = False
    recursive: bool = False
    optional: bool = False       # skip quietly when the source or mount point cannot exist
    idmapped: bool = False       # the source's owners show through the sandbox's id map


@dataclass(frozen=True)
class Symlink:
    target: str                  # the link's path inside the root
    points_to: str


@dataclass(frozen=True)
class HostOverlay:
    """image = "host": an overlay at ``target`` inside the root (its lowers bottom first,
    the host's directory the lowest)."""

    target: str
    lowers: tuple[str, ...]
    upper: str
    work: str


@dataclass(frozen=True)
class HostSymlink:
    """image = "host": a top-level host entry that is a symlink (``/bin -> usr/bin``)."""

    name: str


@dataclass(frozen=True)
class PivotRoot:
    """Make the overlay the root and detach the old one."""


Op = Overlay | FreshMount | Bind | Symlink | HostOverlay | HostSymlink | PivotRoot


def check_layer_path(path: str) -> None:
    """Overlay options are comma/colon separated: paths holding those cannot be used."""
    if any(ch in path for ch in _UNSAFE_IN_OPTIONS):
        raise ValueError(f"path cannot be used in an overlay mount: {path!r}")


def plan_mounts(spec: MountSpec) -> list[Op]:
    """The operations of SPEC 4.2, in order (``coop-init`` has already made mount
    propagation private, before it reads any)."""
    for path in (*spec.lowers, spec.upper, spec.work,
                 *(p for h in spec.host_layers for p in (*h.lowers, h.upper, h.work))):
        check_layer_path(path)
    if not spec.lowers:
        raise ValueError("an overlay root needs at least one lower directory")
    ops: list[Op] = [
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
        ops += [HostOverlay(f"/{h.rel}", h.lowers, h.upper, h.work) for h in spec.host_layers]
        ops += [HostSymlink(name) for name in spec.host_links]
        ops += _covered_secrets(spec)
    if spec.workspace is not None:
        ops.append(Bind(spec.workspace, spec.workspace_inside, idmapped=spec.idmapped_workspace))
    ops += [Bind(source, inside) for source, inside in spec.persist]
    ops += [Bind(source, inside, kind=kind, readonly=True)
            for source, inside, kind in spec.readonly_binds]
    # What a bind would show of coop's own directory (its sockets, other sessions): an
    # empty read-only filesystem over it, which nothing inside may unmount.
    ops += [FreshMount("tmpfs", inside, NOSUID_NODEV | linux.MS_NOEXEC | linux.MS_RDONLY,
                       "mode=0555", cover=True) for inside in spec.hidden]
    ops += [Bind(source, inside, kind="file", readonly=True, optional=spec.host_image)
            for source, inside in spec.etc_files]
    ops.append(PivotRoot())
    return ops


def _covered_secrets(spec: MountSpec) -> list[Op]:
    """An empty read-only tmpfs over each secret directory, the blank file bound
    read-only over each secret file: /etc's secrets never show, whoever runs coop."""
    ops: list[Op] = []
    for inside, is_dir in spec.secrets:
        if is_dir:
            ops.append(FreshMount("tmpfs", inside, NOSUID_NODEV | linux.MS_NOEXEC
                                  | linux.MS_RDONLY, "mode=0555", cover=True))
        elif spec.blank is None:
            raise ValueError("covering the host's secret files needs a blank file")
        else:
            ops.append(Bind(spec.blank, inside, kind="file", readonly=True))
    return ops


def hidden_targets(hidden: Iterable[str], binds: Iterable[tuple[str, str]]) -> tuple[str, ...]:
    """Where each hidden host directory (a real path) shows inside the sandbox through
    ``binds`` (host real path, path inside): the targets to cover, in order, once each."""
    binds = list(binds)
    found: dict[str, None] = {}
    for hide in hidden:
        for source, inside in binds:
            if hide == source or hide.startswith(source.rstrip("/") + "/"):
                rel = os.path.relpath(hide, source)
                found[inside if rel == "." else f"{inside.rstrip('/')}/{rel}"] = None
    return tuple(found)


def split_plan(ops: Sequence[Op], late_sources: Iterable[str]) -> tuple[list[Op], list[Op]]:
    """The plan in two parts, so the init overlaps its work with the supervisor's: up to
    the first bind of a ``late_sources`` path (or host overlay whose upper is one), and
    the rest, which needs those sources (the supervisor creates them meanwhile)."""
    late = set(late_sources)
    first_late = next((i for i, op in enumerate(ops)
                       if (isinstance(op, Bind) and op.source in late)
                       or (isinstance(op, HostOverlay) and op.upper in late)), len(ops))
    return list(ops[:first_late]), list(ops[first_late:])


# --- records for coop-init -------------------------------------------------------------


def _overlay_records(op: Overlay) -> list[dict[str, Any]]:
    """One "lower" per layer (bottom first), then the overlay itself."""
    return [*({"op": "lower", "path": lower} for lower in op.lowers),
            {"op": "overlay", "root": op.target, "upper": op.upper, "work": op.work}]


def plan_records(ops: Sequence[Op]) -> list[dict[str, Any]]:
    """The set-up records (``initproto``) for ``ops``, in order."""
    records: list[dict[str, Any]] = []
    for op in ops:
        if isinstance(op, Overlay):
            records += _overlay_records(op)
        elif isinstance(op, FreshMount):
            records.append({"op": "fresh", "fstype": op.fstype, "target": op.target,
                            "flags": op.flags, "data": op.data, "cover": op.cover})
        elif isinstance(op, Bind):
            records.append({"op": "bind", "source": op.source, "target": op.target,
                            "file": op.kind == "file", "readonly": op.readonly,
                            "recursive": op.recursive, "optional": op.optional,
                            "idmapped": op.idmapped})
        elif isinstance(op, Symlink):
            records.append({"op": "symlink", "target": op.target, "points_to": op.points_to})
        elif isinstance(op, HostOverlay):
            records += [*({"op": "lower", "path": lower} for lower in op.lowers),
                        {"op": "hostlayer", "target": op.target, "upper": op.upper,
                         "work": op.work}]
        elif isinstance(op, HostSymlink):
            records.append({"op": "hostentry", "name": op.name})
        else:
            records.append({"op": "pivot"})
    return records
