"""Telling that a workspace's build is current without validating its Coopfile again.

``coop init`` with nothing to do must cost little more than starting Python, and
validating the Coopfile means importing pydantic and building its models, which costs
several times that. So every build records a *fingerprint* of what it was built from:
the bytes of each Coopfile layer, the CLI overrides, the platform asked for and whether
build steps get the full subordinate id range (the apt command depends on it). When the
fingerprint computed now matches the workspace's record and that build is complete (and,
for ``image = "host"``, was built on the host's present release: ``hostlayer``), the
build is current: nothing is parsed, validated or imported beyond this module and the
store.

This module must stay light: no pydantic, no requests, no oras.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coop_build.errors import StoreError
from coop_build.hostlayer import system_identity
from coop_build.idmap import choose_idmap
from coop_build.paths import CoopPaths, global_config_path
from coop_build.store import Store

COOPFILE_NAME = "coop.toml"
_FORMAT = 1


@dataclass(frozen=True)
class CoopfilePaths:
    """Where the Coopfile layers are looked for."""

    global_path: Path
    workspace_path: Path
    explicit: bool  # the workspace file was named (``-f``): it must exist


def coopfile_paths(
    path: Path | None,
    *,
    workspace: Path | None,
    global_path: Path | None,
    environ: Mapping[str, str],
) -> CoopfilePaths:
    """Resolve the global and workspace layer paths the way ``load_coopfile`` reads them."""
    if global_path is None:
        global_path = global_config_path(dict(environ))
    explicit = path is not None
    if path is None:
        path = (workspace if workspace is not None else Path.cwd()) / COOPFILE_NAME
    return CoopfilePaths(global_path=global_path, workspace_path=path, explicit=explicit)


def inputs_digest(
    layers: Sequence[tuple[Path, bytes | None]], overrides: Mapping[str, Any] | None
) -> str:
    """sha256 of every layer file (absolute path and bytes, ``None`` when absent) and the
    overrides: what a Coopfile was read from, before any parsing."""
    h = hashlib.sha256()
    h.update(f"coop-inputs/{_FORMAT}\0".encode())
    for path, raw in layers:
        h.update(str(path.absolute()).encode() + b"\0")
        if raw is None:
            h.update(b"-\0")
        else:
            h.update(b"%d\0" % len(raw) + raw)
    h.update(json.dumps(overrides or {}, sort_keys=True, default=str).encode())
    return h.hexdigest()


def fingerprint(inputs: str, *, platform: str | None, idmap_full: bool) -> str:
    """What a workspace's build record is compared with: the inputs digest plus the build
    options that change step keys."""
    text = json.dumps([_FORMAT, inputs, platform, idmap_full])
    return hashlib.sha256(text.encode()).hexdigest()


def read_layers(paths: CoopfilePaths) -> list[tuple[Path, bytes | None]]:
    """The bytes of each layer file (``None`` for a missing one), lowest layer first.

    Unreadable files are returned as ``None`` too: the full load reports them properly.
    """
    out: list[tuple[Path, bytes | None]] = []
    for path in (paths.global_path, paths.workspace_path):
        try:
            out.append((path, path.read_bytes()))
        except OSError:
            out.append((path, None))
    return out


def env_warning(source: str, key: str, name: str) -> str:
    """The one-line warning for an ``[env]`` value naming a variable that is not set."""
    return f"{source}: [env].{key}: ${name} is not set in your environment"


@dataclass(frozen=True)
class CurrentBuild:
    """A workspace build found current by fingerprint alone."""

    build_key: str
    warnings: tuple[str, ...]


def current_build(
    coop_paths: CoopPaths,
    workspace: Path,
    print_: str,
    environ: Mapping[str, str],
) -> CurrentBuild | None:
    """The workspace's build when its record carries fingerprint ``print_`` and the build
    is complete; ``None`` means "load the Coopfile and let the Builder decide"."""
    store = Store(coop_paths)
    try:
        record = store.workspace_record(workspace)
        if record is None or record.fingerprint != print_:
            return None
        build = store.get_build(record.build_key)
    except StoreError:
        return None
    if build is None or not store.build_complete(build):
        return None
    if build.host and build.system != system_identity():
        return None  # the host image's base is the host as it was (``hostlayer``)
    warnings = list(record.static_warnings)
    warnings += [
        env_warning(r.source, r.key, r.name) for r in record.env_refs if r.name not in environ
    ]
    return CurrentBuild(build_key=record.build_key, warnings=tuple(warnings))


def check(
    coop_paths: CoopPaths,
    workspace: Path,
    *,
    path: Path | None = None,
    global_path: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    platform: str | None = None,
    environ: Mapping[str, str],
) -> CurrentBuild | None:
    """Everything ``coop init`` does when there is nothing to do: read and hash the
    Coopfile layers and compare with the workspace's record (see the module docstring)."""
    where = coopfile_paths(path, workspace=workspace, global_path=global_path, environ=environ)
    digest = inputs_digest(read_layers(where), overrides)
    full = choose_idmap(environ=environ).full
    return current_build(
        coop_paths, workspace, fingerprint(digest, platform=platform, idmap_full=full), environ
    )
