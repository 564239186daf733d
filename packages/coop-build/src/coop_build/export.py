"""CI prebuilds: a built rootfs as an OCI image, pushed to a registry and pulled back.

Every layer dir of a build (an overlay upper dir) becomes one gzip OCI layer, so the
image has one layer per build step and the config's labels name the build key and the
step keys. ``fetch_prebuilt`` imports such an image layer by layer, each into the layer
dir of its step key, so a later local change to the Coopfile still reuses the steps
below it. Conversion runs inside the build's user namespace (``_layertar``), where the
files' owners are the ones the build saw and sub-uid files are readable (root converts
on the host, translating owners by the build's map).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from coop_build.errors import (
    CoopBuildError,
    InvalidReferenceError,
    NotFoundError,
    RegistryError,
    StoreError,
    ToolError,
    UnsupportedImageError,
)
from coop_build.idmap import IdMap, choose_idmap
from coop_build.layout import Layout, hash_file
from coop_build.manifest import (
    OCI_CONFIG,
    OCI_LAYER_GZIP,
    OCI_MANIFEST,
    Descriptor,
    ImageManifest,
    check_digest,
    config_env,
    parse_manifest,
    parse_platform,
)
from coop_build.paths import CoopPaths
from coop_build.progress import Message, ProgressCallback, ignore_progress
from coop_build.reference import HOST_IMAGE, Reference, parse_reference, parse_repository
from coop_build.store import IMAGE_ENV_KEY

if TYPE_CHECKING:
    from coop_build.steps import BuildPlan
    from coop_build.store import BuildRecord, Store

logger = logging.getLogger(__name__)

LABEL_BUILD_KEY = "org.coop.build-key"
LABEL_STEPS = "org.coop.steps"
_EXPORTED_KEY = "dev.coop.exported"  # layout annotation: f"{_EXPORTED_KEY}/{step key}"


@dataclass(frozen=True)
class ExportedLayer:
    """One layer dir as a gzip blob in the layout."""

    digest: str  # of the gzip stream: the manifest's layer digest
    diff_id: str  # of the plain tar: the config's rootfs.diff_ids entry
    size: int

    def descriptor(self) -> Descriptor:
        return Descriptor(OCI_LAYER_GZIP, self.digest, self.size)


@dataclass(frozen=True)
class StepInfo:
    """What the image labels say about one step (bottom first)."""

    key: str
    description: str


# -- pure: image documents -------------------------------------------------------------


def image_config(
    *,
    platform: str,
    build_key: str,
    steps: Sequence[StepInfo],
    layers: Sequence[ExportedLayer],
    env: Sequence[str] = (),
) -> bytes:
    """The OCI image config: platform, labels and one diff_id + history entry per step.

    ``env`` is the base image's Env (PATH and friends), kept for other runtimes. No
    ``created`` time, so pushing the same build twice gives the same config digest.
    """
    if len(steps) != len(layers):
        raise StoreError(f"build {build_key}: {len(steps)} steps but {len(layers)} layers")
    plat = parse_platform(platform)
    config: dict[str, Any] = {"architecture": plat.architecture, "os": plat.os}
    if plat.variant:
        config["variant"] = plat.variant
    steps_label = json.dumps(
        [{"key": s.key, "description": s.description} for s in steps], separators=(",", ":")
    )
    config["config"] = {"Labels": {LABEL_BUILD_KEY: build_key, LABEL_STEPS: steps_label}}
    if env:
        config["config"]["Env"] = list(env)
    config["rootfs"] = {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]}
    config["history"] = [
        {"created_by": s.description, "comment": f"coop step {s.key}"} for s in steps
    ]
    return json.dumps(config, separators=(",", ":"), sort_keys=True).encode()


def image_manifest(config: Descriptor, layers: Sequence[ExportedLayer], build_key: str) -> bytes:
    """The OCI manifest (with ``mediaType``, which oras-py and some registries want)."""
    return ImageManifest(
        media_type=OCI_MANIFEST,
        config=config,
        layers=tuple(layer.descriptor() for layer in layers),
        annotations={LABEL_BUILD_KEY: build_key},
    ).to_json()


def parse_steps_label(config: Mapping[str, Any]) -> tuple[str | None, list[StepInfo]]:
    """``(build key, steps)`` from an image config's labels; ``(None, [])`` if absent."""
    inner = config.get("config")
    labels = inner.get("Labels") if isinstance(inner, dict) else None
    if not isinstance(labels, dict):
        return None, []
    key = labels.get(LABEL_BUILD_KEY)
    raw = labels.get(LABEL_STEPS)
    if not isinstance(key, str) or not isinstance(raw, str):
        return None, []
    try:
        entries = json.loads(raw)
    except ValueError:
        raise UnsupportedImageError(f"label {LABEL_STEPS} is not JSON") from None
    steps: list[StepInfo] = []
    if not isinstance(entries, list):
        raise UnsupportedImageError(f"label {LABEL_STEPS} is not a list")
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("key"), str):
            raise UnsupportedImageError(f"label {LABEL_STEPS} has a malformed entry")
        desc = entry.get("description")
        steps.append(StepInfo(entry["key"], desc if isinstance(desc, str) else ""))
    return key, steps


def push_target(ref: str) -> tuple[Reference, str | None]:
    """The repository to push to and the extra tag REF names (None when it names none)."""
    try:
        return parse_repository(ref), None
    except InvalidReferenceError:
        parsed = parse_reference(ref)
    if parsed.digest is not None:
        raise InvalidReferenceError(f"cannot push to a digest reference: {ref}")
    return parsed, parsed.tag


# -- layer conversion (inside the user namespace) --------------------------------------


def _run_layertar(verb: str, first: Path, second: Path, workdir: Path, idmap: IdMap) -> None:
    """Run ``_layertar VERB`` where the layer's owners are what the build saw: in a user
    namespace with ``idmap``, or, for root (whose namespaces are coop's range and may not
    walk root's directories), on the host with the map to translate owners by; then
    root hands an imported layer to the range. Its error becomes ours."""
    from coop_build.namespace import hand_over_tree, run_in_userns

    result = workdir / "result.json"
    argv = [sys.executable, "-m", "coop_build._layertar", verb, str(first), str(second),
            str(result)]
    as_root = os.geteuid() == 0
    if as_root and verb == "export":
        maps = workdir / "idmap.json"
        maps.write_text(json.dumps({"uid_map": idmap.uid_map, "gid_map": idmap.gid_map}))
        argv.append(str(maps))
    failure: CoopBuildError | None = None
    try:
        if as_root:
            _run_host(argv)
        else:
            run_in_userns(argv, idmap=idmap)
    except CoopBuildError as exc:
        failure = exc
    try:
        data = json.loads(result.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        data = None
    if isinstance(data, dict) and isinstance(data.get("error"), str):
        raise StoreError(f"cannot {verb} layer {first}: {data['error']}")
    if failure is not None:
        raise failure
    if not isinstance(data, dict):
        raise StoreError(f"cannot {verb} layer {first}: the converter left no result")
    if as_root and verb == "import":
        hand_over_tree(second, idmap)


def _run_host(argv: list[str]) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False,
                          stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        raise ToolError(f"{argv[0]} failed: {lines[-1] if lines else f'exit {proc.returncode}'}",
                        tool=argv[0], stderr=proc.stderr)


def export_layer(
    layer_fs: Path, layout: Layout, tmp: Path, *, idmap: IdMap, cache_key: str | None = None
) -> ExportedLayer:
    """Turn one overlay upper dir into a gzip OCI layer blob in ``layout``.

    With ``cache_key`` (a step key: layer dirs never change once published), a blob
    exported before is reused without reading the layer again.
    """
    layout.ensure()
    if cache_key is not None:
        known = _cached_export(layout, cache_key)
        if known is not None:
            return known
    tmp.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=tmp, prefix="export-"))
    try:
        out = work / "layer.tar.gz"
        _run_layertar("export", layer_fs, out, work, idmap)
        data = json.loads((work / "result.json").read_text(encoding="utf-8"))
        digest, size = hash_file(out)
        if digest != data.get("digest") or size != data.get("size"):
            raise StoreError(f"exported layer of {layer_fs} changed while it was written")
        diff_id = check_digest(str(data.get("diff_id")))
        out.replace(layout.blob_path(digest))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    exported = ExportedLayer(digest=digest, diff_id=diff_id, size=size)
    if cache_key is not None:
        layout.set_annotation(f"{_EXPORTED_KEY}/{cache_key}", f"{digest} {diff_id} {size}")
    return exported


def _cached_export(layout: Layout, step_key: str) -> ExportedLayer | None:
    value = layout.annotation(f"{_EXPORTED_KEY}/{step_key}")
    if value is None:
        return None
    try:
        digest, diff_id, size = value.split(" ")
        layer = ExportedLayer(check_digest(digest), check_digest(diff_id), int(size))
    except (ValueError, UnsupportedImageError, CoopBuildError):
        return None
    return layer if layout.has_blob(layer.digest) else None


def import_layer(blob: Path, dest: Path, tmp: Path, *, idmap: IdMap) -> None:
    """Unpack one OCI layer blob (gzip or plain tar) into ``dest`` as an overlay upper dir.

    OCI whiteouts become overlay whiteouts (char 0:0, ``user.overlay.opaque``). ``dest``
    must not exist; it is created by the converter, inside the namespace.
    """
    tmp.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=tmp, prefix="import-"))
    try:
        _run_layertar("import", blob, dest, work, idmap)
    finally:
        shutil.rmtree(work, ignore_errors=True)


# -- push ----------------------------------------------------------------------------


def push_build(
    paths: CoopPaths,
    store: Store,
    record: BuildRecord,
    ref: str,
    *,
    progress: ProgressCallback = ignore_progress,
    idmap: IdMap | None = None,
) -> str:
    """Export ``record`` as an OCI image and push it to ``ref``, tagged with the build key.

    ``ref`` is ``REGISTRY/REPO`` or ``REGISTRY/REPO:TAG`` (then also tagged ``TAG``).
    Blobs the registry has already are not sent again, and exported layers stay in the
    cache layout, so pushing the same build twice reads no layer twice. Returns
    ``REGISTRY/REPO:<build key>@<manifest digest>``.
    """
    from coop_build.registry import RegistryClient

    if record.host or record.image == HOST_IMAGE:
        raise UnsupportedImageError(
            f'cannot push build {record.build_key[:12]}: base.image = "host" is not an image'
        )
    target, extra_tag = push_target(ref)
    idmap = idmap if idmap is not None else choose_idmap()
    layout = Layout(paths.cache_oci)
    layer_refs = store.layers_of(record)
    exported: list[ExportedLayer] = []
    # A scratch dir, so that whatever a killed export leaves is cleaned like a dead step.
    with store.lock():
        scratch = store.new_scratch()
        try:
            for i, layer in enumerate(layer_refs, start=1):
                progress(Message(f"exporting layer {i}/{len(layer_refs)}: {layer.description}"))
                exported.append(export_layer(
                    layer.fs, layout, scratch.path, idmap=idmap, cache_key=layer.layer_id
                ))
        finally:
            store.discard(scratch)
    steps = [StepInfo(layer.step_key, layer.description) for layer in layer_refs]
    config_raw = image_config(
        platform=record.platform,
        build_key=record.build_key,
        steps=steps,
        layers=exported,
        env=record.env,
    )
    config_desc = layout.put_bytes(config_raw, OCI_CONFIG)
    manifest_raw = image_manifest(config_desc, exported, record.build_key)
    manifest_desc = layout.put_bytes(manifest_raw, OCI_MANIFEST)

    client = RegistryClient(target.registry)
    repo = target.repository
    for blob in exported:
        progress(Message(f"pushing blob {blob.digest[:19]} ({blob.size} bytes)"))
        client.push_blob(repo, blob.digest, layout.blob_path(blob.digest))
    client.push_blob(repo, config_desc.digest, layout.blob_path(config_desc.digest))
    tags = [record.build_key] + ([extra_tag] if extra_tag and extra_tag != record.build_key else [])
    for tag in tags:
        client.push_manifest(repo, tag, manifest_raw, OCI_MANIFEST)
    pushed = f"{target.name}:{record.build_key}@{manifest_desc.digest}"
    logger.info("pushed build %s as %s (tags: %s)", record.build_key, pushed, ", ".join(tags))
    progress(Message(f"pushed {pushed}"))
    return pushed


# -- fetch ---------------------------------------------------------------------------


def fetch_prebuilt(
    paths: CoopPaths,
    store: Store,
    repository: str,
    plan: BuildPlan,
    *,
    progress: ProgressCallback = ignore_progress,
    idmap: IdMap | None = None,
) -> BuildRecord | None:
    """The build of ``plan`` from ``repository``'s tag ``<build key>``, or None if absent.

    Each image layer becomes the layer dir of its step (steps already in the store are
    kept as they are), so the result is a normal build: later Coopfile changes reuse the
    steps below them. An image whose labels do not match the plan is ignored (None).
    """
    from coop_build.pull import pull_image
    from coop_build.registry import RegistryClient

    repo = parse_repository(repository)
    if plan.host:
        logger.info('base.image = "host": no prebuilt image to look for')
        return None
    client = RegistryClient(repo.registry)
    try:
        exists = client.manifest_exists(repo.repository, plan.build_key)
    except NotFoundError:
        exists = False
    except RegistryError as exc:
        # Offline, or the registry is down: a local build (maybe from cached steps) still
        # works, so say why and let the builder go on.
        logger.warning("cannot look up prebuilt image in %s (%s); building locally",
                       repo.name, exc)
        progress(Message(f"prebuilt repository {repo.name} unreachable; building locally"))
        return None
    if not exists:
        logger.info("no prebuilt image %s:%s; building locally", repo.name, plan.build_key)
        return None
    ref = repo.with_tag(plan.build_key)
    progress(Message(f"using prebuilt image {ref}"))
    pulled = pull_image(ref, paths=paths, platform=plan.platform, progress=progress)
    label_key, steps = parse_steps_label(pulled.config)
    expected = [s.key for s in plan.steps]
    if label_key != plan.build_key or [s.key for s in steps] != expected:
        logger.warning("prebuilt image %s does not match this Coopfile's steps; ignoring it", ref)
        return None
    layout = Layout(paths.cache_oci)
    layers = _umoci_layers(layout, pulled.umoci_tag)
    if len(layers) != len(plan.steps):
        logger.warning("prebuilt image %s has %d layers for %d steps; ignoring it",
                       ref, len(layers), len(plan.steps))
        return None
    idmap = idmap if idmap is not None else choose_idmap()
    layer_ids: list[str] = []
    with store.lock():
        for step, layer in zip(plan.steps, layers, strict=True):
            have = store.find_layer(step.key)
            if have is not None:
                layer_ids.append(have)
                continue
            progress(Message(f"unpacking prebuilt layer of {step.description}"))
            scratch = store.new_scratch()
            try:
                import_layer(layout.blob_path(layer.digest), scratch.fs, scratch.path, idmap=idmap)
                layer_ids.append(
                    store.publish_layer(
                        scratch,
                        step_key=step.key,
                        description=step.description,
                        definition=step.definition,
                        extra=_layer_extra(step.kind, ref, layer.digest, pulled.config),
                    )
                )
            except BaseException:
                store.discard(scratch)
                raise
        record = store.register_build(plan, layer_ids, env=config_env(pulled.config))
    logger.info("imported prebuilt build %s from %s", plan.build_key, ref)
    return record


def _umoci_layers(layout: Layout, tag: str) -> tuple[Descriptor, ...]:
    """The layers (gzip or plain tar) of the manifest the pull tagged for umoci."""
    desc = layout.resolve(tag)
    if desc is None:
        raise StoreError(f"pulled image {tag} is missing from the cache layout")
    manifest = parse_manifest(layout.read_blob(desc.digest), desc.media_type)
    if not isinstance(manifest, ImageManifest):
        raise UnsupportedImageError(f"pulled image {tag} is an index, not an image")
    return manifest.layers


def _layer_extra(
    kind: str, ref: Reference, blob: str, config: Mapping[str, Any]
) -> dict[str, Any]:
    """``step.json`` extras of an imported layer; the base keeps the image's Env for the
    builder, which reads it back when it reuses this layer for a local build."""
    extra: dict[str, Any] = {"prebuilt": str(ref), "blob": blob}
    if kind == "base":
        extra[IMAGE_ENV_KEY] = config_env(config)
    return extra
