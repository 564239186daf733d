"""A small OCI image-layout writer for test fixtures.

Written independently of coop_build on purpose: fixtures must not be made by the code they
test. Standard library only, so the root-run prepare script can import it without the venv.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
REF_NAME = "org.opencontainers.image.ref.name"

# Fixed timestamp so fixture images get the same digests on every run.
FIXED_MTIME = 1_700_000_000
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class Descriptor:
    """An OCI content descriptor."""

    media_type: str
    digest: str
    size: int
    platform: dict[str, str] | None = None
    annotations: dict[str, str] | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest,
                               "size": self.size}
        if self.platform:
            out["platform"] = dict(self.platform)
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out


@dataclass(frozen=True)
class Layer:
    """A compressed layer blob and the digest of its uncompressed tar (the diff_id)."""

    descriptor: Descriptor
    diff_id: str


class TarBuilder:
    """Builds an uncompressed tar in memory, adding missing parent directories first."""

    def __init__(self) -> None:
        self._buf = io.BytesIO()
        self._tar = tarfile.open(  # noqa: SIM115 - closed by getvalue()
            fileobj=self._buf, mode="w", format=tarfile.PAX_FORMAT)
        self._dirs: set[str] = set()

    def _info(self, name: str, kind: bytes, mode: int) -> tarfile.TarInfo:
        name = name.strip("/")
        parent = os.path.dirname(name)
        if parent and parent not in self._dirs:
            self.dir(parent)
        info = tarfile.TarInfo(name)
        info.type = kind
        info.mode = mode
        info.mtime = FIXED_MTIME
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        return info

    def dir(self, name: str, mode: int = 0o755) -> None:
        name = name.strip("/")
        if name in self._dirs:
            return
        info = self._info(name, tarfile.DIRTYPE, mode)
        self._dirs.add(name)
        self._tar.addfile(info)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        info = self._info(name, tarfile.REGTYPE, mode)
        info.size = len(data)
        self._tar.addfile(info, io.BytesIO(data))

    def symlink(self, name: str, target: str) -> None:
        info = self._info(name, tarfile.SYMTYPE, 0o777)
        info.linkname = target
        self._tar.addfile(info)

    def hardlink(self, name: str, target: str) -> None:
        """A tar hard link; ``target`` is the archive name of an earlier member."""
        info = self._info(name, tarfile.LNKTYPE, 0o644)
        info.linkname = target.strip("/")
        self._tar.addfile(info)

    def getvalue(self) -> bytes:
        self._tar.close()
        return self._buf.getvalue()


class _HashingWriter:
    """A write-only file object that hashes and counts what passes through it."""

    def __init__(self, sink: BinaryIO | None) -> None:
        self.sink = sink
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        self.size += len(data)
        if self.sink is not None:
            self.sink.write(data)
        return len(data)

    def flush(self) -> None:
        if self.sink is not None:
            self.sink.flush()


class Layout:
    """An OCI image layout directory (blobs/sha256, oci-layout, index.json)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs = root / "blobs" / "sha256"
        self.blobs.mkdir(parents=True, exist_ok=True)
        (root / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
        if not (root / "index.json").exists():
            self._write_index([])

    def _write_index(self, manifests: list[dict[str, Any]]) -> None:
        body = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}
        tmp = self.root / "index.json.tmp"
        tmp.write_text(json.dumps(body, indent=2))
        tmp.replace(self.root / "index.json")

    def put_blob(self, data: bytes, media_type: str) -> Descriptor:
        digest = hashlib.sha256(data).hexdigest()
        path = self.blobs / digest
        if not path.exists():
            path.write_bytes(data)
        return Descriptor(media_type, "sha256:" + digest, len(data))

    def put_json(self, obj: Any, media_type: str) -> Descriptor:
        return self.put_blob(json.dumps(obj, sort_keys=True).encode(), media_type)

    def add_layer(self, tar_bytes: bytes) -> Layer:
        """Gzips ``tar_bytes`` (deterministically) into a layer blob."""
        compressed = gzip.compress(tar_bytes, compresslevel=6, mtime=0)
        desc = self.put_blob(compressed, OCI_LAYER_GZIP)
        return Layer(desc, "sha256:" + hashlib.sha256(tar_bytes).hexdigest())

    def add_layer_from_dir(self, rootfs: Path,
                           exclude: Callable[[str], bool] = lambda _name: False) -> Layer:
        """Streams a directory tree into a gzip layer (owners, modes, hard links kept)."""
        tmp = self.blobs / ".layer.tmp"
        with tmp.open("wb") as out:
            compressed = _HashingWriter(out)
            with gzip.GzipFile(fileobj=compressed, mode="wb", compresslevel=6,
                               mtime=0) as gz:
                plain = _HashingWriter(gz)  # type: ignore[arg-type]
                with tarfile.open(fileobj=plain, mode="w|",  # type: ignore[call-overload]
                                  format=tarfile.PAX_FORMAT) as tar:

                    def keep(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
                        return None if exclude(info.name) else info

                    for entry in sorted(os.listdir(rootfs)):
                        tar.add(rootfs / entry, arcname=entry, filter=keep)
        digest = compressed.sha.hexdigest()
        tmp.replace(self.blobs / digest)
        desc = Descriptor(OCI_LAYER_GZIP, "sha256:" + digest, compressed.size)
        return Layer(desc, "sha256:" + plain.sha.hexdigest())

    def add_image(self, layers: Iterable[Layer], *, arch: str = "amd64",
                  variant: str | None = None, cmd: tuple[str, ...] = ("/bin/sh",),
                  env: tuple[str, ...] = ("PATH=" + DEFAULT_PATH,)) -> Descriptor:
        """Writes config + manifest for ``layers`` (bottom first); returns the manifest."""
        layers = list(layers)
        config: dict[str, Any] = {
            "architecture": arch,
            "os": "linux",
            "config": {"Env": list(env), "Cmd": list(cmd), "WorkingDir": "/"},
            "rootfs": {"type": "layers", "diff_ids": [la.diff_id for la in layers]},
            "history": [{"created_by": "coop test bench"} for _ in layers],
        }
        if variant:
            config["variant"] = variant
        config_desc = self.put_json(config, OCI_CONFIG)
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config_desc.to_json(),
            "layers": [la.descriptor.to_json() for la in layers],
        }
        platform = {"architecture": arch, "os": "linux"}
        if variant:
            platform["variant"] = variant
        desc = self.put_json(manifest, OCI_MANIFEST)
        return Descriptor(desc.media_type, desc.digest, desc.size, platform=platform)

    def add_index(self, manifests: Iterable[Descriptor]) -> Descriptor:
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX,
                 "manifests": [m.to_json() for m in manifests]}
        return self.put_json(index, OCI_INDEX)

    def tag(self, name: str, desc: Descriptor) -> None:
        """Points ``name`` at ``desc`` in index.json (replacing an older entry)."""
        index = json.loads((self.root / "index.json").read_text())
        kept = [m for m in index["manifests"]
                if m.get("annotations", {}).get(REF_NAME) != name]
        entry = Descriptor(desc.media_type, desc.digest, desc.size,
                           annotations={REF_NAME: name}).to_json()
        self._write_index([*kept, entry])

    def tags(self) -> dict[str, dict[str, Any]]:
        index = json.loads((self.root / "index.json").read_text())
        return {m["annotations"][REF_NAME]: m for m in index["manifests"]
                if REF_NAME in m.get("annotations", {})}

