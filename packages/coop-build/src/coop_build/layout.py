"""The content-addressed OCI image layout that caches every pulled blob (``cache/oci``).

Several coop processes may share one layout: blobs appear only by ``rename`` of a
complete, verified file, and ``index.json`` is rewritten (temp + rename) under an
``fcntl`` lock, so readers never see half a file and writers never lose each other's tags.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from coop_build.errors import DigestMismatchError, RegistryError, StoreError
from coop_build.manifest import (
    OCI_INDEX,
    Descriptor,
    check_digest,
    parse_descriptor,
    sha256_digest,
)

logger = logging.getLogger(__name__)

REF_NAME = "org.opencontainers.image.ref.name"
_CHUNK = 1 << 20


def hash_file(path: Path) -> tuple[str, int]:
    """``(sha256 digest, size)`` of a file, read in chunks."""
    h = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
            size += len(chunk)
    return "sha256:" + h.hexdigest(), size


class Layout:
    """An OCI image layout at ``root``, created on first use."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._ready = False

    # -- structure -------------------------------------------------------------------

    @property
    def index_path(self) -> Path:
        return self.root / "index.json"

    def ensure(self) -> None:
        """Create the layout skeleton if missing (idempotent, safe concurrently)."""
        if self._ready:
            return
        (self.root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        (self.root / "blobs" / ".partial").mkdir(exist_ok=True)
        if not (self.root / "oci-layout").exists():
            self._write_atomic(self.root / "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        if not self.index_path.exists():
            with self._locked():
                if not self.index_path.exists():
                    self._write_index({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []})
        self._ready = True

    def blob_path(self, digest: str) -> Path:
        return self.root / "blobs" / "sha256" / check_digest(digest).split(":", 1)[1]

    def partial_path(self, digest: str) -> Path:
        """Where an unfinished download of ``digest`` lives (kept for resuming)."""
        self.ensure()
        return self.root / "blobs" / ".partial" / check_digest(digest).split(":", 1)[1]

    def has_blob(self, digest: str) -> bool:
        return self.blob_path(digest).is_file()

    def read_blob(self, digest: str) -> bytes:
        try:
            return self.blob_path(digest).read_bytes()
        except FileNotFoundError:
            raise StoreError(f"blob {digest} is not in the cache {self.root}") from None

    def verify_blob(self, digest: str, size: int | None = None) -> bool:
        """Re-hash a cached blob; a corrupt one is removed and False returned."""
        path = self.blob_path(digest)
        try:
            actual, actual_size = hash_file(path)
        except FileNotFoundError:
            return False
        if actual == digest and (size is None or size == actual_size):
            return True
        logger.warning("cached blob %s is corrupt (hashes to %s); removing it", digest, actual)
        path.unlink(missing_ok=True)
        return False

    # -- writing blobs ----------------------------------------------------------------

    def put_bytes(self, data: bytes, media_type: str | None = None) -> Descriptor:
        """Store ``data`` (e.g. a manifest) and return its descriptor."""
        digest = sha256_digest(data)
        if not self.has_blob(digest):
            self.ensure()
            self._write_atomic(self.blob_path(digest), data)
        return Descriptor(media_type or "application/octet-stream", digest, len(data))

    def put_stream(self, write: Callable[[Any], None], media_type: str | None = None) -> Descriptor:
        """Store what ``write(file)`` produces, hashing the file afterwards."""
        self.ensure()
        fd, tmp = tempfile.mkstemp(dir=self.root / "blobs" / ".partial", prefix="put-")
        tmp_path = Path(tmp)
        try:
            with os.fdopen(fd, "wb") as f:
                write(f)
            digest, size = hash_file(tmp_path)
            tmp_path.replace(self.blob_path(digest))
        except BaseException:
            tmp_path.unlink(missing_ok=True)
            raise
        return Descriptor(media_type or "application/octet-stream", digest, size)

    def commit_partial(self, digest: str, *, size: int | None = None, verify: bool = True) -> Path:
        """Move a finished partial download into place (after checking it, by default)."""
        partial = self.partial_path(digest)
        if verify:
            actual, actual_size = hash_file(partial)
            if actual != digest or (size is not None and actual_size != size):
                partial.unlink(missing_ok=True)
                raise DigestMismatchError(
                    f"blob {digest} downloaded as {actual} ({actual_size} bytes); discarded"
                )
        final = self.blob_path(digest)
        partial.replace(final)
        return final

    # -- index.json -------------------------------------------------------------------

    def tag(self, name: str, descriptor: Descriptor) -> None:
        """Point ``name`` (``org.opencontainers.image.ref.name``) at ``descriptor``."""
        entry = descriptor.to_json()
        entry["annotations"] = {**dict(descriptor.annotations), REF_NAME: name}

        def change(index: dict[str, Any]) -> None:
            index["manifests"] = [
                m
                for m in index.get("manifests", [])
                if (m.get("annotations") or {}).get(REF_NAME) != name
            ] + [entry]

        self._update_index(change)

    def resolve(self, name: str) -> Descriptor | None:
        """The descriptor tagged ``name``, or None."""
        for m in self._read_index().get("manifests", []):
            if (m.get("annotations") or {}).get(REF_NAME) == name:
                try:
                    return parse_descriptor(m, f"{self.index_path} entry {name!r}")
                except RegistryError as exc:
                    raise StoreError(str(exc)) from None
        return None

    def set_annotation(self, key: str, value: str) -> None:
        """Record a string in index.json's top-level annotations (e.g. tag -> digest)."""

        def change(index: dict[str, Any]) -> None:
            annotations = index.get("annotations")
            if not isinstance(annotations, dict):
                annotations = {}
            annotations[key] = value
            index["annotations"] = annotations

        self._update_index(change)

    def annotation(self, key: str) -> str | None:
        annotations = self._read_index().get("annotations")
        if isinstance(annotations, dict):
            value = annotations.get(key)
            return value if isinstance(value, str) else None
        return None

    # -- internals --------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / "index.json.lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _read_index(self) -> dict[str, Any]:
        self.ensure()
        try:
            data = json.loads(self.index_path.read_bytes())
        except (OSError, json.JSONDecodeError) as exc:
            raise StoreError(f"cannot read {self.index_path}: {exc}") from None
        if not isinstance(data, dict) or not isinstance(data.get("manifests", []), list):
            raise StoreError(f"{self.index_path} is not an OCI index")
        return data

    def _update_index(self, change: Callable[[dict[str, Any]], None]) -> None:
        self.ensure()
        with self._locked():
            index = self._read_index()
            change(index)
            self._write_index(index)

    def _write_index(self, index: dict[str, Any]) -> None:
        self._write_atomic(self.index_path, json.dumps(index, indent=1).encode())

    def _write_atomic(self, path: Path, data: bytes) -> None:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            Path(tmp).replace(path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
