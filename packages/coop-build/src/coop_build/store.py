"""The rootfs store under ``$COOP_HOME``: layers by step key, builds, workspace records.

Layout (docs/architecture.md, "The store")::

    layers/<layer-id>/fs          a finished step's overlay upper dir (a lower for later steps)
    layers/<layer-id>/step.json   step key, description, definition, created
    rootfs/<build-key>/build.json BuildRecord
    workspaces/<sha256>.json      WorkspaceRecord of a workspace's real path
    tmp/step-*, tmp/trash-*       in-progress steps and dirs being deleted
    build.lock                    held (flock) by whoever creates or removes layers

A layer id is the step key, or ``<step-key>~<n>`` when a step is re-run (``--no-cache``)
while a dir for its key exists: published layers are never modified, so a session running
on an older build keeps its files. Steps are built in ``tmp/`` and renamed into ``layers/``
only when complete; records are written to a temp file, fsynced and renamed. Whatever a
killed build leaves in ``tmp/`` is removed by the next holder of the build lock.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import secrets
import stat
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from coop_build.errors import StoreError
from coop_build.paths import CoopPaths

if TYPE_CHECKING:
    from coop_build.idmap import IdMap
    from coop_build.steps import BuildPlan

logger = logging.getLogger(__name__)

RECORD_VERSION = 1
SCRATCH_PREFIX = "step-"
TRASH_PREFIX = "trash-"
LOCK_NAME = "build.lock"
STEP_META = "step.json"
BUILD_META = "build.json"
IMAGE_ENV_KEY = "image_env"  # in the base layer's step.json: the image config's Env


# --- records ---------------------------------------------------------------------------


def _field(data: Mapping[str, Any], name: str, kind: type | tuple[type, ...], where: str) -> Any:
    value = data.get(name)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise StoreError(f"{where}: field {name!r} is missing or has the wrong type")
    return value


def _str_list(data: Mapping[str, Any], name: str, where: str) -> tuple[str, ...]:
    value = _field(data, name, list, where)
    if not all(isinstance(item, str) for item in value):
        raise StoreError(f"{where}: field {name!r} must be a list of strings")
    return tuple(value)


@dataclass(frozen=True)
class StepRecord:
    key: str
    description: str


@dataclass(frozen=True)
class BuildRecord:
    """A built environment: its steps and the layer dirs that hold them, bottom to top."""

    build_key: str
    image: str  # base.image as written; "host" for the host image
    platform: str
    host: bool
    steps: tuple[StepRecord, ...]
    layers: tuple[str, ...]  # layer ids (dir names under layers/), bottom -> top
    package_count: int
    created: float  # unix time
    env: tuple[str, ...] = ()  # the base image's config Env ("NAME=value")
    system: str = ""  # image = "host": the host it was built on (hostlayer.system_identity)

    def to_json(self) -> dict[str, Any]:
        extra = {"system": self.system} if self.host else {}
        return {
            "version": RECORD_VERSION,
            "build_key": self.build_key,
            "image": self.image,
            "platform": self.platform,
            "host": self.host,
            "steps": [{"key": s.key, "description": s.description} for s in self.steps],
            "layers": list(self.layers),
            "package_count": self.package_count,
            "created": self.created,
            "env": list(self.env),
            **extra,
        }

    @classmethod
    def from_json(cls, data: Any, where: str) -> BuildRecord:
        """Parse a ``build.json``; raises StoreError naming ``where`` on any defect."""
        if not isinstance(data, dict):
            raise StoreError(f"{where}: not a JSON object")
        if data.get("version") != RECORD_VERSION:
            raise StoreError(f"{where}: unsupported record version {data.get('version')!r}")
        steps_raw = _field(data, "steps", list, where)
        steps: list[StepRecord] = []
        for item in steps_raw:
            if not isinstance(item, dict):
                raise StoreError(f"{where}: field 'steps' must hold objects")
            steps.append(
                StepRecord(
                    key=_field(item, "key", str, where),
                    description=_field(item, "description", str, where),
                )
            )
        layers = _str_list(data, "layers", where)
        if len(layers) != len(steps) or not layers:
            raise StoreError(f"{where}: 'steps' and 'layers' must be non-empty and match")
        for layer in layers:
            _check_layer_id(layer, where)
        return cls(
            build_key=_field(data, "build_key", str, where),
            image=_field(data, "image", str, where),
            platform=_field(data, "platform", str, where),
            host=_field(data, "host", bool, where),
            steps=tuple(steps),
            layers=layers,
            package_count=_field(data, "package_count", int, where),
            created=float(_field(data, "created", (int, float), where)),
            env=_str_list(data, "env", where) if "env" in data else (),
            system=_field(data, "system", str, where) if "system" in data else "",
        )


@dataclass(frozen=True)
class EnvRef:
    """An ``[env]`` entry whose value is ``$NAME``: which file set it, the key, the name."""

    source: str
    key: str
    name: str


@dataclass(frozen=True)
class WorkspaceRecord:
    """Which build a workspace last built, and from which Coopfile."""

    workspace: str  # real path
    build_key: str
    coopfile: str | None
    built: float
    # The quick up-to-date check (coop_build.quickcheck): what the build was made from,
    # and the warnings to repeat when it is found current without loading the Coopfile.
    fingerprint: str | None = None
    static_warnings: tuple[str, ...] = ()
    env_refs: tuple[EnvRef, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "version": RECORD_VERSION,
            "workspace": self.workspace,
            "build_key": self.build_key,
            "coopfile": self.coopfile,
            "built": self.built,
            "fingerprint": self.fingerprint,
            "static_warnings": list(self.static_warnings),
            "env_refs": [[r.source, r.key, r.name] for r in self.env_refs],
        }

    @classmethod
    def from_json(cls, data: Any, where: str) -> WorkspaceRecord:
        if not isinstance(data, dict):
            raise StoreError(f"{where}: not a JSON object")
        coopfile = data.get("coopfile")
        if coopfile is not None and not isinstance(coopfile, str):
            raise StoreError(f"{where}: field 'coopfile' has the wrong type")
        fingerprint = data.get("fingerprint")
        warnings = data.get("static_warnings", [])
        refs = data.get("env_refs", [])
        if (
            (fingerprint is not None and not isinstance(fingerprint, str))
            or not isinstance(warnings, list)
            or not all(isinstance(w, str) for w in warnings)
            or not isinstance(refs, list)
            or not all(
                isinstance(r, list) and len(r) == 3 and all(isinstance(x, str) for x in r)
                for r in refs
            )
        ):
            raise StoreError(f"{where}: quick-check fields have the wrong type")
        return cls(
            workspace=_field(data, "workspace", str, where),
            build_key=_field(data, "build_key", str, where),
            coopfile=coopfile,
            built=float(_field(data, "built", (int, float), where)),
            fingerprint=fingerprint,
            static_warnings=tuple(warnings),
            env_refs=tuple(EnvRef(*r) for r in refs),
        )


@dataclass(frozen=True)
class LayerRef:
    """One layer of a build, for readers such as the exporter."""

    layer_id: str
    step_key: str
    description: str
    path: Path  # layers/<layer-id>

    @property
    def fs(self) -> Path:
        return self.path / "fs"


@dataclass(frozen=True)
class Scratch:
    """An in-progress step under ``tmp/``: fill ``fs`` (use ``work`` as overlay workdir).

    ``fs`` is not created, so an unpacker that wants a missing destination can use it.
    """

    path: Path

    @property
    def layer(self) -> Path:
        """What gets renamed into ``layers/``: ``fs`` plus ``step.json``."""
        return self.path / "layer"

    @property
    def fs(self) -> Path:
        return self.layer / "fs"

    @property
    def work(self) -> Path:
        return self.path / "work"


@dataclass(frozen=True)
class GcReport:
    layers_removed: tuple[str, ...]


def _host_root_owned(st: os.stat_result) -> bool:
    """Root's layers belong to coop's id range (``coop_build.subids``); one of host root
    is from a coop that ran root's builds as host root."""
    return st.st_uid == 0 and os.geteuid() == 0


def _check_layer_id(layer_id: str, where: str) -> None:
    if not layer_id or "/" in layer_id or layer_id.startswith(".") or "\0" in layer_id:
        raise StoreError(f"{where}: invalid layer id {layer_id!r}")


def _check_key(key: str) -> None:
    if len(key) != 64 or any(c not in "0123456789abcdef" for c in key):
        raise StoreError(f"invalid build or step key {key!r}")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json_durable(path: Path, data: Any) -> None:
    """Write JSON so that readers see the old file or the whole new one, even after a crash
    or a power loss: the file and its directory are fsynced (the session runtime's state
    files skip that: they describe processes a power loss ends anyway). Creates the parent
    directory; the mode follows the umask."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with tmp.open("w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2, sort_keys=True)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise StoreError(f"{path}: cannot read: {exc}") from None


def workspace_id(workspace: Path) -> str:
    """The record name of a workspace: sha256 of its real path."""
    real = os.path.realpath(workspace)
    return hashlib.sha256(real.encode("utf-8", "surrogateescape")).hexdigest()


# --- the store -------------------------------------------------------------------------


class Store:
    """Reads and writes one ``COOP_HOME``'s layers, builds and workspace records.

    Creating scratch dirs, publishing or removing layers needs the build lock
    (``with store.lock():``); the lock is re-entrant within one Store object, so code
    called under it (e.g. the exporter) may take it again. Reading needs no lock.
    ``remove_tree`` deletes a directory tree; the default tries ``shutil.rmtree`` and,
    for trees holding files of sub-uids, falls back to removing inside the build's user
    namespace.
    """

    def __init__(
        self, paths: CoopPaths, *, remove_tree: Callable[[Path], None] | None = None
    ) -> None:
        self.paths = paths
        self._remove_tree = remove_tree or self._default_remove_tree
        self._lock_depth = 0
        self._lock_fd: int | None = None
        self._idmap: IdMap | None = None

    # -- removal ------------------------------------------------------------------------

    def _default_remove_tree(self, path: Path) -> None:
        from coop_build.errors import NamespaceError
        from coop_build.namespace import force_rmtree, remove_tree

        try:
            force_rmtree(path)  # our own files, read-only dirs included: no helper needed
            return
        except NamespaceError as exc:
            logger.debug("%s; removing in the build's user namespace", exc)
        from coop_build.idmap import choose_idmap

        if self._idmap is None:
            self._idmap = choose_idmap()
        remove_tree(path, self._idmap)

    def _trash(self, path: Path) -> None:
        """Move ``path`` out of sight with one rename, then delete it."""
        if not path.exists() and not path.is_symlink():
            return
        self.paths.tmp.mkdir(parents=True, exist_ok=True)
        if path.parent != self.paths.tmp or not path.name.startswith(TRASH_PREFIX):
            target = self.paths.tmp / f"{TRASH_PREFIX}{secrets.token_hex(8)}"
            path.rename(target)
            path = target
        self._remove_tree(path)

    # -- lock and scratch ---------------------------------------------------------------

    @contextlib.contextmanager
    def lock(self, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
        """Hold ``COOP_HOME/build.lock``; the first holder clears what killed builds left.

        ``on_wait`` is called once if another process holds the lock (we then block).
        """
        if self._lock_depth:
            self._lock_depth += 1
            try:
                yield
            finally:
                self._lock_depth -= 1
            return
        self.paths.home.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.paths.home / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                logger.info("waiting for another build to release %s", LOCK_NAME)
                if on_wait is not None:
                    on_wait()
                fcntl.flock(fd, fcntl.LOCK_EX)
            self._lock_fd = fd
            self._lock_depth = 1
            self.clean_tmp()
            yield
        finally:
            self._lock_depth = 0
            self._lock_fd = None
            os.close(fd)

    def _require_lock(self, what: str) -> None:
        if not self._lock_depth:
            raise StoreError(f"{what} needs the build lock (use Store.lock())")

    def clean_tmp(self) -> list[str]:
        """Remove in-progress step dirs and trash left by builds that died; lock held."""
        self._require_lock("cleaning tmp/")
        removed: list[str] = []
        try:
            entries = sorted(self.paths.tmp.iterdir())
        except FileNotFoundError:
            return removed
        for entry in entries:
            if entry.name.startswith((SCRATCH_PREFIX, TRASH_PREFIX)):
                logger.info("removing leftover %s", entry)
                self._trash(entry)
                removed.append(entry.name)
        return removed

    def new_scratch(self) -> Scratch:
        """A fresh dir under ``tmp/`` for one step (``work`` created, ``fs`` not)."""
        self._require_lock("a scratch dir")
        self.paths.tmp.mkdir(parents=True, exist_ok=True)
        path = self.paths.tmp / f"{SCRATCH_PREFIX}{secrets.token_hex(8)}"
        path.mkdir(mode=0o700)
        scratch = Scratch(path)
        scratch.layer.mkdir()
        scratch.work.mkdir()
        return scratch

    def discard(self, scratch: Scratch) -> None:
        """Delete a scratch dir (a failed or interrupted step)."""
        self._trash(scratch.path)

    # -- layers ---------------------------------------------------------------------------

    def layer_path(self, layer_id: str) -> Path:
        _check_layer_id(layer_id, "layer")
        return self.paths.layers / layer_id

    def layer_complete(self, layer_id: str) -> bool:
        """The layer is published whole, and made for the namespaces we run (not a
        ``host_root_layer``)."""
        path = self.layer_path(layer_id)
        try:
            fs = (path / "fs").lstat()
        except OSError:
            return False
        return ((path / STEP_META).is_file() and stat.S_ISDIR(fs.st_mode)
                and not _host_root_owned(fs))

    def host_root_layers(self, record: BuildRecord) -> list[str]:
        """The layers of ``record`` made before root's builds ran as coop's id range: their
        files are host root's, which root's sandboxes must never be given (``coop
        rebuild`` replaces them)."""
        found = []
        for layer_id in record.layers:
            try:
                fs = (self.layer_path(layer_id) / "fs").lstat()
            except OSError:
                continue
            if _host_root_owned(fs):
                found.append(layer_id)
        return found

    def layer_meta(self, layer_id: str) -> dict[str, Any]:
        """The ``step.json`` of a published layer."""
        meta_path = self.layer_path(layer_id) / STEP_META
        data = _read_json(meta_path)
        if not isinstance(data, dict):
            raise StoreError(f"{meta_path}: missing or not a JSON object")
        return data

    def base_image_env(self, layer_id: str) -> list[str]:
        """The image config's ``Env`` a base layer was made from: its ``step.json`` keeps
        it, or, for a base imported from a prebuilt, the build record that names it."""
        meta = self.layer_meta(layer_id)
        if IMAGE_ENV_KEY not in meta:
            for record in self.list_builds():
                if record.layers[0] == layer_id:
                    return list(record.env)
            return []
        value = meta[IMAGE_ENV_KEY]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise StoreError(f"layer {layer_id}: {IMAGE_ENV_KEY!r} is not a list of strings")
        return value

    def find_layer(self, step_key: str) -> str | None:
        """A complete published layer for ``step_key`` (the plain key first), or None."""
        _check_key(step_key)
        if self.layer_complete(step_key):
            return step_key
        candidates: list[tuple[int, str]] = []
        try:
            for entry in self.paths.layers.iterdir():
                head, sep, tail = entry.name.partition("~")
                if head == step_key and sep and tail.isdigit():
                    candidates.append((int(tail), entry.name))
        except FileNotFoundError:
            return None
        for _, layer_id in sorted(candidates, reverse=True):
            if self.layer_complete(layer_id):
                return layer_id
        return None

    def publish_layer(
        self,
        scratch: Scratch,
        *,
        step_key: str,
        description: str,
        definition: Mapping[str, Any],
        extra: Mapping[str, Any] | None = None,
    ) -> str:
        """Make a finished scratch dir a layer with one rename; returns its layer id.

        Never replaces an existing layer dir: if one exists for the key the new layer
        gets the id ``<step-key>~<n>``. The rest of the scratch dir is deleted.
        """
        self._require_lock("publishing a layer")
        _check_key(step_key)
        if not scratch.fs.is_dir():
            raise StoreError(f"{scratch.fs}: step produced no filesystem dir")
        meta = {
            "version": RECORD_VERSION,
            "step_key": step_key,
            "description": description,
            "definition": dict(definition),
            "created": time.time(),
            **(dict(extra) if extra else {}),
        }
        write_json_durable(scratch.layer / STEP_META, meta)
        self.paths.layers.mkdir(parents=True, exist_ok=True)
        layer_id = step_key
        n = 1
        while True:
            target = self.paths.layers / layer_id
            try:
                # rename(2) onto an existing non-empty dir fails, so this never replaces.
                scratch.layer.rename(target)
                break
            except OSError as exc:
                if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise
            n += 1
            layer_id = f"{step_key}~{n}"
        _fsync_dir(self.paths.layers)
        self._trash(scratch.path)
        logger.debug("published layer %s", layer_id)
        return layer_id

    def layers_of(self, record: BuildRecord) -> tuple[LayerRef, ...]:
        """A build's layers bottom -> top with their step keys (for export)."""
        return tuple(
            LayerRef(
                layer_id=layer_id,
                step_key=step.key,
                description=step.description,
                path=self.layer_path(layer_id),
            )
            for step, layer_id in zip(record.steps, record.layers, strict=True)
        )

    def lower_dirs(self, record: BuildRecord) -> tuple[Path, ...]:
        """The ``fs`` dirs of a build, bottom first, as overlay lowers."""
        return tuple(ref.fs for ref in self.layers_of(record))

    def list_layers(self) -> list[str]:
        try:
            return sorted(e.name for e in self.paths.layers.iterdir() if not e.name.startswith("."))
        except FileNotFoundError:
            return []

    # -- builds ---------------------------------------------------------------------------

    def _build_path(self, build_key: str) -> Path:
        _check_key(build_key)
        return self.paths.rootfs / build_key / BUILD_META

    def get_build(self, build_key: str) -> BuildRecord | None:
        """The record of ``build_key``, or None if it was never built (or was removed)."""
        path = self._build_path(build_key)
        data = _read_json(path)
        if data is None:
            return None
        record = BuildRecord.from_json(data, str(path))
        if record.build_key != build_key:
            raise StoreError(f"{path}: holds build {record.build_key}, not {build_key}")
        return record

    def build_complete(self, record: BuildRecord) -> bool:
        """Whether every layer dir of the build is still there."""
        return all(self.layer_complete(layer_id) for layer_id in record.layers)

    def list_builds(self) -> list[BuildRecord]:
        """Every readable build record, oldest first; unreadable ones are logged and skipped."""
        records: list[BuildRecord] = []
        try:
            entries = list(self.paths.rootfs.iterdir())
        except FileNotFoundError:
            return records
        for entry in entries:
            try:
                record = self.get_build(entry.name)
            except StoreError as exc:
                logger.warning("skipping %s: %s", entry, exc)
                continue
            if record is not None:
                records.append(record)
        return sorted(records, key=lambda r: r.created)

    def save_build(self, record: BuildRecord) -> None:
        """Write (or replace) the record of a build whose layers are all published."""
        missing = [layer for layer in record.layers if not self.layer_complete(layer)]
        if missing:
            raise StoreError(f"build {record.build_key}: layers missing: {', '.join(missing)}")
        write_json_durable(self._build_path(record.build_key), record.to_json())

    def register_build(
        self, plan: BuildPlan, layer_ids: Sequence[str], *, env: Iterable[str] = ()
    ) -> BuildRecord:
        """Record a build of ``plan`` made of published layers (one per step, bottom first).

        Used by the builder and by the prebuilt importer.
        """
        if len(layer_ids) != len(plan.steps):
            raise StoreError(
                f"build {plan.build_key}: {len(layer_ids)} layers for {len(plan.steps)} steps"
            )
        record = BuildRecord(
            build_key=plan.build_key,
            image=plan.image,
            platform=plan.platform,
            host=plan.host,
            steps=tuple(StepRecord(s.key, s.description) for s in plan.steps),
            layers=tuple(layer_ids),
            package_count=plan.package_count,
            created=time.time(),
            env=tuple(env),
            system=plan.system,
        )
        self.save_build(record)
        return record

    def remove_build(self, build_key: str) -> bool:
        """Delete a build record (its layers go at the next ``gc``); False if absent."""
        path = self._build_path(build_key)
        if not path.exists():
            return False
        path.unlink()
        with contextlib.suppress(OSError):
            path.parent.rmdir()
        return True

    def unused_builds(self, keep: Iterable[str] = ()) -> list[str]:
        """Build keys no workspace record points to, except those in ``keep``."""
        used = {w.build_key for w in self.list_workspaces()} | set(keep)
        return [r.build_key for r in self.list_builds() if r.build_key not in used]

    def gc(self, keep: Iterable[str] = ()) -> GcReport:
        """Remove layer dirs that no build record references, except layer ids in ``keep``.

        Pass the layer ids that running sessions have mounted in ``keep``: a ``--no-cache``
        rebuild can leave them unreferenced by any record while still in use.
        """
        with self.lock():
            referenced = set(keep)
            for record in self.list_builds():
                referenced.update(record.layers)
            removed: list[str] = []
            for layer_id in self.list_layers():
                if layer_id not in referenced:
                    logger.info("removing unused layer %s", layer_id)
                    self._trash(self.paths.layers / layer_id)
                    removed.append(layer_id)
            return GcReport(layers_removed=tuple(removed))

    # -- workspaces -----------------------------------------------------------------------

    def _workspace_path(self, workspace: Path) -> Path:
        return self.paths.workspaces / f"{workspace_id(workspace)}.json"

    def record_workspace(
        self,
        workspace: Path,
        build_key: str,
        coopfile: Path | None,
        *,
        fingerprint: str | None = None,
        static_warnings: Sequence[str] = (),
        env_refs: Sequence[EnvRef] = (),
    ) -> WorkspaceRecord:
        """Remember that ``workspace`` now uses ``build_key``; an unchanged record is kept."""
        _check_key(build_key)
        coopfile_real = None if coopfile is None else os.path.realpath(coopfile)
        try:
            current = self.workspace_record(workspace)
        except StoreError:
            current = None
        wanted = (build_key, coopfile_real, fingerprint, tuple(static_warnings), tuple(env_refs))
        if current is not None and wanted == (
            current.build_key,
            current.coopfile,
            current.fingerprint,
            current.static_warnings,
            current.env_refs,
        ):
            return current
        record = WorkspaceRecord(
            workspace=os.path.realpath(workspace),
            build_key=build_key,
            coopfile=coopfile_real,
            built=time.time(),
            fingerprint=fingerprint,
            static_warnings=tuple(static_warnings),
            env_refs=tuple(env_refs),
        )
        write_json_durable(self._workspace_path(workspace), record.to_json())
        return record

    def workspace_record(self, workspace: Path) -> WorkspaceRecord | None:
        path = self._workspace_path(workspace)
        data = _read_json(path)
        return None if data is None else WorkspaceRecord.from_json(data, str(path))

    def workspace_build(self, workspace: Path) -> BuildRecord | None:
        """The build a workspace last built, if its record and every layer still exist."""
        record = self.workspace_record(workspace)
        if record is None:
            return None
        build = self.get_build(record.build_key)
        if build is None or not self.build_complete(build):
            return None
        return build

    def host_root_build(self, workspace: Path) -> bool:
        """The workspace's build is there but holds layers of host root
        (``host_root_layers``): only a rebuild makes it usable."""
        record = self.workspace_record(workspace)
        build = None if record is None else self.get_build(record.build_key)
        return build is not None and bool(self.host_root_layers(build))

    def list_workspaces(self) -> list[WorkspaceRecord]:
        records: list[WorkspaceRecord] = []
        try:
            entries = sorted(self.paths.workspaces.glob("*.json"))
        except FileNotFoundError:
            return records
        for entry in entries:
            try:
                data = _read_json(entry)
                if data is not None:
                    records.append(WorkspaceRecord.from_json(data, str(entry)))
            except StoreError as exc:
                logger.warning("skipping %s: %s", entry, exc)
        return records
