"""OCI and Docker manifests: media types, parsing, platform choice, conversion to OCI.

Pure code: bytes in, dataclasses out. Registries send either OCI or Docker v2 schema 2
documents; umoci 0.4.7 reads only OCI types with plain or gzip layers, so ``to_oci`` and
``plain_tar_layer`` describe what the pull writes into the cache layout for it.
"""

from __future__ import annotations

import hashlib
import json
import platform as _platform
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from coop_build.errors import RegistryError, UnsupportedImageError

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
OCI_LAYER_ND_TAR = "application/vnd.oci.image.layer.nondistributable.v1.tar"
OCI_LAYER_ND_GZIP = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
OCI_LAYER_ND_ZSTD = "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_FOREIGN_LAYER_GZIP = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
DOCKER_MANIFEST_V1 = "application/vnd.docker.distribution.manifest.v1+json"
DOCKER_MANIFEST_V1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"

MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
INDEX_TYPES = (OCI_INDEX, DOCKER_MANIFEST_LIST)
#: What we send as ``Accept`` when resolving a reference.
ACCEPT_ALL = ", ".join((OCI_INDEX, DOCKER_MANIFEST_LIST, OCI_MANIFEST, DOCKER_MANIFEST))

# layer media type -> (OCI equivalent, compression or None)
_LAYERS: dict[str, tuple[str, str | None]] = {
    OCI_LAYER_TAR: (OCI_LAYER_TAR, None),
    OCI_LAYER_GZIP: (OCI_LAYER_GZIP, "gzip"),
    OCI_LAYER_ZSTD: (OCI_LAYER_ZSTD, "zstd"),
    OCI_LAYER_ND_TAR: (OCI_LAYER_ND_TAR, None),
    OCI_LAYER_ND_GZIP: (OCI_LAYER_ND_GZIP, "gzip"),
    OCI_LAYER_ND_ZSTD: (OCI_LAYER_ND_ZSTD, "zstd"),
    DOCKER_LAYER_GZIP: (OCI_LAYER_GZIP, "gzip"),
    DOCKER_FOREIGN_LAYER_GZIP: (OCI_LAYER_ND_GZIP, "gzip"),
}
_CONFIGS = {OCI_CONFIG: OCI_CONFIG, DOCKER_CONFIG: OCI_CONFIG}

# Python's platform.machine() -> (GOARCH, default variant)
_ARCHES: dict[str, tuple[str, str | None]] = {
    "x86_64": ("amd64", None),
    "amd64": ("amd64", None),
    "aarch64": ("arm64", "v8"),
    "arm64": ("arm64", "v8"),
    "armv8l": ("arm", "v8"),
    "armv7l": ("arm", "v7"),
    "armv6l": ("arm", "v6"),
    "armv5tel": ("arm", "v5"),
    "i386": ("386", None),
    "i586": ("386", None),
    "i686": ("386", None),
    "ppc64le": ("ppc64le", None),
    "ppc64": ("ppc64", None),
    "s390x": ("s390x", None),
    "riscv64": ("riscv64", None),
    "mips64": ("mips64", None),
    "loongarch64": ("loong64", None),
}


@dataclass(frozen=True)
class Platform:
    """``os/architecture[/variant]`` as in OCI image indexes (GOOS/GOARCH names)."""

    os: str
    architecture: str
    variant: str | None = None

    def __str__(self) -> str:
        base = f"{self.os}/{self.architecture}"
        return f"{base}/{self.variant}" if self.variant else base

    def matches(self, other: Platform) -> bool:
        """Whether an index entry ``other`` satisfies this wanted platform.

        A wanted platform without variant takes any variant; ``arm64`` entries without
        a variant are ``v8`` (the only one that exists in practice).
        """
        if (self.os, self.architecture) != (other.os, other.architecture):
            return False
        if self.variant is None:
            return True
        theirs = other.variant
        if theirs is None and other.architecture == "arm64":
            theirs = "v8"
        return self.variant == theirs


def parse_platform(text: str) -> Platform:
    """Parse ``os/arch[/variant]``; raises UnsupportedImageError on anything else."""
    parts = text.strip().split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise UnsupportedImageError(
            f"invalid platform {text!r}: expected os/arch[/variant], e.g. linux/amd64"
        )
    return Platform(parts[0], parts[1], parts[2] if len(parts) == 3 else None)


def host_platform(machine: str | None = None) -> str:
    """This machine's platform in OCI naming, e.g. ``linux/amd64`` or ``linux/arm64/v8``."""
    name = (machine if machine is not None else _platform.machine()).lower()
    arch, variant = _ARCHES.get(name, (name, None))
    return str(Platform("linux", arch, variant))


@dataclass(frozen=True)
class Descriptor:
    """A content descriptor: what a manifest says about a blob or another manifest."""

    media_type: str
    digest: str
    size: int
    urls: tuple[str, ...] = ()
    annotations: Mapping[str, str] = field(default_factory=dict)
    platform: Platform | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": self.size,
        }
        if self.urls:
            data["urls"] = list(self.urls)
        if self.annotations:
            data["annotations"] = dict(self.annotations)
        if self.platform is not None:
            plat: dict[str, str] = {
                "architecture": self.platform.architecture,
                "os": self.platform.os,
            }
            if self.platform.variant:
                plat["variant"] = self.platform.variant
            data["platform"] = plat
        return data


@dataclass(frozen=True)
class ImageManifest:
    """A single-platform image: config plus layers, bottom first."""

    media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...]
    annotations: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> bytes:
        """Serialise (always with ``mediaType``, which oras-py and umoci both like)."""
        data: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": self.media_type,
            "config": self.config.to_json(),
            "layers": [layer.to_json() for layer in self.layers],
        }
        if self.annotations:
            data["annotations"] = dict(self.annotations)
        return json.dumps(data, separators=(",", ":"), sort_keys=False).encode()


@dataclass(frozen=True)
class ImageIndex:
    """A multi-platform index (OCI) or manifest list (Docker)."""

    media_type: str
    manifests: tuple[Descriptor, ...]
    annotations: Mapping[str, str] = field(default_factory=dict)

    def platforms(self) -> list[str]:
        """The platforms offered, attestation entries (``unknown/unknown``) left out."""
        return [
            str(m.platform)
            for m in self.manifests
            if m.platform is not None and m.platform.os != "unknown"
        ]


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def check_digest(digest: str) -> str:
    """Accept only ``sha256:<64 lowercase hex>``: digests become file names."""
    algo, _, hexpart = digest.partition(":")
    if algo != "sha256" or len(hexpart) != 64 or not all(c in "0123456789abcdef" for c in hexpart):
        raise UnsupportedImageError(f"unsupported or malformed digest {digest!r}")
    return digest


def _str(obj: Mapping[str, Any], key: str, where: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value:
        raise RegistryError(f"invalid {where}: {key!r} missing or not a string")
    return value


def _annotations(obj: Mapping[str, Any], where: str) -> dict[str, str]:
    value = obj.get("annotations") or {}
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise RegistryError(f"invalid {where}: annotations must map strings to strings")
    return dict(value)


def parse_descriptor(obj: Any, where: str) -> Descriptor:
    """One descriptor from JSON, checked (digest format, integer size)."""
    if not isinstance(obj, dict):
        raise RegistryError(f"invalid {where}: descriptor is not an object")
    size = obj.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise RegistryError(f"invalid {where}: size missing or not a non-negative integer")
    urls = obj.get("urls") or []
    if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
        raise RegistryError(f"invalid {where}: urls must be a list of strings")
    plat = None
    raw_plat = obj.get("platform")
    if raw_plat is not None:
        if not isinstance(raw_plat, dict):
            raise RegistryError(f"invalid {where}: platform is not an object")
        variant = raw_plat.get("variant")
        plat = Platform(
            _str(raw_plat, "os", where),
            _str(raw_plat, "architecture", where),
            variant if isinstance(variant, str) and variant else None,
        )
    return Descriptor(
        media_type=_str(obj, "mediaType", where),
        digest=check_digest(_str(obj, "digest", where)),
        size=size,
        urls=tuple(urls),
        annotations=_annotations(obj, where),
        platform=plat,
    )


def parse_manifest(raw: bytes, media_type: str | None = None) -> ImageManifest | ImageIndex:
    """Parse a manifest or index as served (``media_type`` from Content-Type, if any).

    The document's own ``mediaType`` wins over the header when present; without either
    the shape (``manifests`` vs ``layers``) decides, as OCI allows omitting it.
    """
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RegistryError(f"manifest is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise RegistryError("manifest is not a JSON object")
    declared = data.get("mediaType")
    header = (media_type or "").split(";")[0].strip()
    kind = declared if isinstance(declared, str) and declared else header
    if kind in (DOCKER_MANIFEST_V1, DOCKER_MANIFEST_V1_SIGNED) or data.get("schemaVersion") == 1:
        raise UnsupportedImageError("Docker schema 1 manifests are not supported")
    if data.get("schemaVersion") != 2:
        raise RegistryError("manifest schemaVersion is not 2")
    if kind not in MANIFEST_TYPES + INDEX_TYPES:
        if "manifests" in data:
            kind = OCI_INDEX
        elif "layers" in data and "config" in data:
            kind = OCI_MANIFEST
        else:
            raise UnsupportedImageError(f"unsupported manifest media type {kind or '(none)'!r}")
    if kind in INDEX_TYPES:
        entries = data.get("manifests")
        if not isinstance(entries, list):
            raise RegistryError("invalid index: 'manifests' is not a list")
        return ImageIndex(
            media_type=kind,
            manifests=tuple(parse_descriptor(e, f"index entry {i}") for i, e in enumerate(entries)),
            annotations=_annotations(data, "index"),
        )
    layers = data.get("layers")
    if not isinstance(layers, list):
        raise RegistryError("invalid manifest: 'layers' is not a list")
    return ImageManifest(
        media_type=kind,
        config=parse_descriptor(data.get("config"), "manifest config"),
        layers=tuple(parse_descriptor(e, f"manifest layer {i}") for i, e in enumerate(layers)),
        annotations=_annotations(data, "manifest"),
    )


def select_platform(index: ImageIndex, wanted: str) -> Descriptor:
    """The index entry for ``wanted`` (``os/arch[/variant]``); error lists what exists."""
    want = parse_platform(wanted)
    for entry in index.manifests:
        if entry.platform is None or entry.media_type not in MANIFEST_TYPES:
            continue
        if want.matches(entry.platform):
            return entry
    available = ", ".join(index.platforms()) or "none"
    raise UnsupportedImageError(
        f"image has no manifest for platform {wanted}; available: {available}"
    )


def config_env(config: Mapping[str, Any]) -> list[str]:
    """The ``Env`` list of an image config (strings only; ``[]`` when absent)."""
    inner = config.get("config")
    env = inner.get("Env") if isinstance(inner, dict) else None
    if not isinstance(env, list):
        return []
    return [item for item in env if isinstance(item, str)]


def layer_compression(media_type: str) -> str | None:
    """``"gzip"``, ``"zstd"`` or None for plain tar; error for non-layer types."""
    try:
        return _LAYERS[media_type][1]
    except KeyError:
        raise UnsupportedImageError(f"unsupported layer media type {media_type!r}") from None


def to_oci(manifest: ImageManifest) -> ImageManifest:
    """The same image with OCI media types (blobs, digests and sizes unchanged)."""
    try:
        config_type = _CONFIGS[manifest.config.media_type]
    except KeyError:
        raise UnsupportedImageError(
            f"unsupported config media type {manifest.config.media_type!r}"
        ) from None
    layers = []
    for layer in manifest.layers:
        if layer.media_type not in _LAYERS:
            raise UnsupportedImageError(f"unsupported layer media type {layer.media_type!r}")
        layers.append(replace(layer, media_type=_LAYERS[layer.media_type][0]))
    return ImageManifest(
        media_type=OCI_MANIFEST,
        config=replace(manifest.config, media_type=config_type),
        layers=tuple(layers),
        annotations=manifest.annotations,
    )


def plain_tar_layer(layer: Descriptor, digest: str, size: int) -> Descriptor:
    """Describe the decompressed tar of a (zstd) layer, for umoci 0.4.7.

    The tar's digest is the layer's ``diff_id`` in the image config, so the config
    stays valid unchanged.
    """
    nondist = layer.media_type in (OCI_LAYER_ND_ZSTD, OCI_LAYER_ND_GZIP, OCI_LAYER_ND_TAR)
    return Descriptor(
        media_type=OCI_LAYER_ND_TAR if nondist else OCI_LAYER_TAR,
        digest=digest,
        size=size,
        annotations=layer.annotations,
    )
