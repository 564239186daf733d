"""Pull an image into the OCI layout cache and leave an umoci-readable manifest tagged.

Resolution: a reference pulled before (same platform) is answered from the layout with no
network unless ``refresh``; otherwise tag -> manifest (an index picks the platform) from
the registry. Config and layers are fetched in parallel, every blob verified; blobs
already cached (and re-hashed intact) are never downloaded again.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import IO, Any

import zstandard

from coop_build.errors import (
    CoopBuildError,
    DigestMismatchError,
    RegistryError,
    StoreError,
    UnsupportedImageError,
)
from coop_build.layout import Layout
from coop_build.manifest import (
    OCI_MANIFEST,
    Descriptor,
    ImageIndex,
    ImageManifest,
    host_platform,
    layer_compression,
    parse_manifest,
    parse_platform,
    plain_tar_layer,
    select_platform,
    to_oci,
)
from coop_build.paths import CoopPaths
from coop_build.progress import LayerProgress, ProgressCallback, ignore_progress
from coop_build.reference import Reference
from coop_build.registry import RegistryClient

logger = logging.getLogger(__name__)

WORKERS = 4
_PULLED_KEY = "dev.coop.pulled"  # index annotation: f"{_PULLED_KEY}/{ref}#{platform}" -> digest
_PLAIN_KEY = "dev.coop.plain-tar"  # index annotation: f"{_PLAIN_KEY}/{zstd digest}" -> tar digest


@dataclass(frozen=True)
class PulledImage:
    reference: Reference
    digest: str  # digest of the platform manifest as the registry serves it
    config: dict[str, Any]  # the image config JSON
    layer_digests: tuple[str, ...]
    umoci_tag: str  # tag in the cache layout of an umoci-0.4.7-readable manifest


def umoci_tag_for(manifest_digest: str) -> str:
    """The layout tag of the converted manifest: a pure function of the served digest."""
    return "coop-" + manifest_digest.split(":", 1)[1]


def pull_image(
    ref: Reference,
    *,
    paths: CoopPaths,
    platform: str | None = None,
    progress: ProgressCallback = ignore_progress,
    refresh: bool = False,
    environ: Mapping[str, str] | None = None,
) -> PulledImage:
    """Pull ``ref`` for ``platform`` (default: this machine's) into ``paths.cache_oci``."""
    wanted = platform or host_platform()
    parse_platform(wanted)  # reject a malformed platform before any network
    layout = Layout(paths.cache_oci)
    layout.ensure()
    record_key = f"{_PULLED_KEY}/{ref}#{wanted}"

    verified: set[str] = set()  # blobs re-hashed intact in this call: never hashed twice
    if not refresh:
        cached = _resolve_cached(layout, ref, wanted, record_key)
        if cached is not None:
            digest, manifest = cached
            blobs = (manifest.config, *manifest.layers)
            verified = {d.digest for d in blobs if layout.verify_blob(d.digest, d.size)}
            if all(d.digest in verified for d in blobs):
                for desc in blobs:
                    progress(LayerProgress(desc.digest, desc.size, desc.size, 0.0, cached=True))
                logger.info("using cached %s (%s)", ref, digest)
                return _finish(layout, ref, digest, manifest, record_key, explicit=platform)
            logger.info("cache for %s is incomplete; fetching", ref)

    client = RegistryClient(ref.registry, environ=environ)
    digest, manifest = _resolve_remote(client, layout, ref, wanted)
    _fetch_blobs(client, layout, ref.repository, manifest, progress, verified=verified)
    return _finish(layout, ref, digest, manifest, record_key, explicit=platform)


def _resolve_cached(
    layout: Layout, ref: Reference, wanted: str, record_key: str
) -> tuple[str, ImageManifest] | None:
    """The platform manifest from the cache alone, or None if it is not there."""
    digest = ref.digest or layout.annotation(record_key)
    if digest is None or not layout.verify_blob(digest):
        return None
    try:
        parsed = parse_manifest(layout.read_blob(digest))
        if isinstance(parsed, ImageIndex):
            digest = select_platform(parsed, wanted).digest
            if not layout.verify_blob(digest):
                return None
            parsed = parse_manifest(layout.read_blob(digest))
    except (RegistryError, StoreError) as exc:
        logger.warning("ignoring cached manifest for %s: %s", ref, exc)
        return None
    if not isinstance(parsed, ImageManifest):
        return None
    return digest, parsed


def _resolve_remote(
    client: RegistryClient, layout: Layout, ref: Reference, wanted: str
) -> tuple[str, ImageManifest]:
    top = client.get_manifest(ref.repository, ref.target)
    parsed = parse_manifest(top.raw, top.media_type)
    layout.put_bytes(top.raw, top.media_type)
    digest = top.digest
    if isinstance(parsed, ImageIndex):
        entry = select_platform(parsed, wanted)
        raw = client.get_manifest(ref.repository, entry.digest)
        parsed = parse_manifest(raw.raw, raw.media_type)
        if not isinstance(parsed, ImageManifest):
            raise UnsupportedImageError(f"{ref}: index entry {entry.digest} is itself an index")
        layout.put_bytes(raw.raw, raw.media_type)
        digest = raw.digest
    return digest, parsed


def _fetch_blobs(
    client: RegistryClient,
    layout: Layout,
    repository: str,
    manifest: ImageManifest,
    progress: ProgressCallback,
    *,
    verified: set[str],
) -> None:
    """Config and layers in parallel; cached ones are re-hashed (unless in ``verified``),
    corrupt ones refetched."""
    for layer in manifest.layers:
        layer_compression(layer.media_type)  # unsupported types fail before downloading

    def one(desc: Descriptor) -> None:
        if desc.digest in verified or layout.verify_blob(desc.digest, desc.size):
            progress(LayerProgress(desc.digest, desc.size, desc.size, 0.0, cached=True))
            return
        client.fetch_blob(repository, desc, layout, progress)

    blobs = [manifest.config, *manifest.layers]
    with ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="coop-pull") as pool:
        futures = [pool.submit(one, desc) for desc in blobs]
        errors = [f.exception() for f in futures]
    for error in errors:
        if error is not None:
            raise error


def _finish(
    layout: Layout,
    ref: Reference,
    digest: str,
    manifest: ImageManifest,
    record_key: str,
    *,
    explicit: str | None,
) -> PulledImage:
    """Read the config, write and tag the umoci manifest, record the resolution."""
    try:
        config = json.loads(layout.read_blob(manifest.config.digest))
    except ValueError:
        raise UnsupportedImageError(f"{ref}: image config is not JSON") from None
    if not isinstance(config, dict):
        raise UnsupportedImageError(f"{ref}: image config is not a JSON object")
    if explicit is not None:
        _check_config_platform(config, explicit, ref)
    elif (config.get("os"), config.get("architecture")) != tuple(host_platform().split("/")[:2]):
        logger.warning(
            "%s is %s/%s, not this machine's %s",
            ref,
            config.get("os"),
            config.get("architecture"),
            host_platform(),
        )
    oci = to_oci(manifest)
    diff_ids = _diff_ids(config)
    layers = []
    for i, layer in enumerate(oci.layers):
        if layer_compression(layer.media_type) == "zstd":
            layers.append(_plain_tar(layout, layer, diff_ids[i] if i < len(diff_ids) else None))
        else:
            layers.append(layer)
    converted = ImageManifest(OCI_MANIFEST, oci.config, tuple(layers), oci.annotations)
    stored = layout.put_bytes(converted.to_json(), OCI_MANIFEST)
    tag = umoci_tag_for(digest)
    if layout.resolve(tag) != stored:
        layout.tag(tag, stored)
    if layout.annotation(record_key) != digest:
        layout.set_annotation(record_key, digest)
    return PulledImage(
        reference=ref,
        digest=digest,
        config=config,
        layer_digests=tuple(layer.digest for layer in manifest.layers),
        umoci_tag=tag,
    )


def _diff_ids(config: Mapping[str, Any]) -> list[str]:
    rootfs = config.get("rootfs")
    ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    return [d for d in ids if isinstance(d, str)] if isinstance(ids, list) else []


def _plain_tar(layout: Layout, layer: Descriptor, diff_id: str | None) -> Descriptor:
    """The decompressed tar of a zstd layer, cached by the zstd blob's digest."""
    key = f"{_PLAIN_KEY}/{layer.digest}"
    known = layout.annotation(key)
    if known is not None and layout.has_blob(known):
        return plain_tar_layer(layer, known, layout.blob_path(known).stat().st_size)

    def decompress(out: IO[bytes]) -> None:
        with layout.blob_path(layer.digest).open("rb") as src:
            try:
                zstandard.ZstdDecompressor().copy_stream(src, out)
            except zstandard.ZstdError as exc:
                raise UnsupportedImageError(
                    f"layer {layer.digest} is not valid zstd: {exc}"
                ) from None

    try:
        stored = layout.put_stream(decompress)
    except CoopBuildError:
        raise
    except OSError as exc:
        raise StoreError(f"cannot decompress layer {layer.digest}: {exc}") from None
    if diff_id is not None and stored.digest != diff_id:
        raise DigestMismatchError(
            f"layer {layer.digest} decompresses to {stored.digest}, config says {diff_id}"
        )
    layout.set_annotation(key, stored.digest)
    return plain_tar_layer(layer, stored.digest, stored.size)


def _check_config_platform(config: Mapping[str, Any], wanted: str, ref: Reference) -> None:
    """A single-platform image asked for explicitly must be that platform."""
    want = parse_platform(wanted)
    os_name, arch = config.get("os"), config.get("architecture")
    if (
        isinstance(os_name, str)
        and isinstance(arch, str)
        and (os_name, arch)
        != (
            want.os,
            want.architecture,
        )
    ):
        raise UnsupportedImageError(f"{ref} is {os_name}/{arch}, not {wanted}")
