"""RegistryClient against the bench registry and the Docker-Hub-like token front."""

from __future__ import annotations

import hashlib
import json
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from coop_build import registry as registry_module
from coop_build.auth import Credentials
from coop_build.errors import AuthError, NotFoundError, RegistryError
from coop_build.layout import Layout
from coop_build.manifest import (
    DOCKER_MANIFEST,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER_TAR,
    OCI_MANIFEST,
    Descriptor,
    ImageManifest,
    parse_manifest,
)
from coop_build.progress import LayerProgress, ProgressEvent
from coop_build.reference import parse_reference
from coop_build.registry import RegistryClient, insecure_registries
from support.procs import wait_for

pytestmark = pytest.mark.registry


def _client(host: str, coop_env: Any, **kwargs: Any) -> RegistryClient:
    return RegistryClient(host, environ={"HOME": str(coop_env.home)}, **kwargs)


def test_http_only_for_loopback_or_listed_hosts() -> None:
    assert RegistryClient("127.0.0.1:5000", environ={}).insecure
    assert RegistryClient("localhost:5000", environ={}).insecure
    assert not RegistryClient("registry.example:5000", environ={}).insecure
    env = {"COOP_INSECURE_REGISTRIES": "a.example, registry.example:5000"}
    assert insecure_registries(env) == {"a.example", "registry.example:5000"}
    assert RegistryClient("registry.example:5000", environ=env).insecure
    assert not RegistryClient("registry.example", environ=env).insecure


@pytest.mark.parametrize(
    ("name", "media_type"),
    [("busybox", OCI_MANIFEST), ("layered_v2s2", DOCKER_MANIFEST), ("multiarch", OCI_INDEX)],
)
def test_get_manifest_raw_by_tag_and_digest(
    name: str, media_type: str, test_images: Any, coop_env: Any
) -> None:
    ref = parse_reference(getattr(test_images, name))
    client = _client(ref.registry, coop_env)
    by_tag = client.get_manifest(ref.repository, ref.target)
    assert by_tag.media_type == media_type
    assert by_tag.digest == "sha256:" + hashlib.sha256(by_tag.raw).hexdigest()
    assert by_tag.digest == test_images.digests[name]
    by_digest = client.get_manifest(ref.repository, by_tag.digest)
    assert by_digest == by_tag
    assert client.manifest_exists(ref.repository, by_tag.digest)


def test_missing_things_are_not_found(test_images: Any, coop_env: Any) -> None:
    ref = parse_reference(test_images.busybox)
    client = _client(ref.registry, coop_env)
    with pytest.raises(NotFoundError) as err:
        client.get_manifest(ref.repository, "nope")
    assert "library/busybox:nope" in str(err.value)
    with pytest.raises(NotFoundError, match="library/absent:1"):
        client.get_manifest("library/absent", "1")
    assert not client.manifest_exists(ref.repository, "nope")
    assert not client.blob_exists(ref.repository, "sha256:" + "0" * 64)


def test_refused_port_is_one_line_within_seconds(coop_env: Any) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = _client(f"127.0.0.1:{port}", coop_env)
    started = time.monotonic()
    with pytest.raises(RegistryError) as err:
        client.get_manifest("library/busybox", "1")
    assert time.monotonic() - started < 5
    assert str(err.value) == f"cannot reach registry 127.0.0.1:{port} (http): Connection refused"


def test_fetch_blob_verifies_and_reports_progress(
    test_images: Any, coop_env: Any, tmp_path: Path
) -> None:
    ref = parse_reference(test_images.busybox)
    client = _client(ref.registry, coop_env)
    manifest = parse_manifest(client.get_manifest(ref.repository, ref.target).raw)
    assert isinstance(manifest, ImageManifest)
    layout = Layout(tmp_path / "oci")
    layer = manifest.layers[0]
    events: list[ProgressEvent] = []
    path = client.fetch_blob(ref.repository, layer, layout, events.append)
    assert path == layout.blob_path(layer.digest)
    assert layout.verify_blob(layer.digest, layer.size)
    last = events[-1]
    assert isinstance(last, LayerProgress)
    assert (last.done, last.total, last.cached) == (layer.size, layer.size, False)
    events.clear()
    client.fetch_blob(ref.repository, layer, layout, events.append)
    assert events == [LayerProgress(layer.digest, layer.size, layer.size, 0.0, cached=True)]

    # A descriptor announcing fewer bytes than the blob has is refused.
    layout2 = Layout(tmp_path / "oci2")
    short = Descriptor(layer.media_type, layer.digest, layer.size - 10)
    with pytest.raises(RegistryError, match="larger than"):
        client.fetch_blob(ref.repository, short, layout2)
    assert not layout2.has_blob(layer.digest)


def _push_image(client: RegistryClient, repo: str, tag: str, tmp_path: Path) -> tuple[str, bytes]:
    layer = tmp_path / "layer.tar"
    layer.write_bytes(b"\0" * 10240 + f"{time.time_ns()}".encode())
    layer_digest = "sha256:" + hashlib.sha256(layer.read_bytes()).hexdigest()
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        }
    ).encode()
    config_path = tmp_path / "config.json"
    config_path.write_bytes(config)
    config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
    client.push_blob(repo, layer_digest, layer)
    client.push_blob(repo, config_digest, config_path)
    manifest = ImageManifest(
        OCI_MANIFEST,
        Descriptor(OCI_CONFIG, config_digest, len(config)),
        (Descriptor(OCI_LAYER_TAR, layer_digest, layer.stat().st_size),),
    ).to_json()
    digest = client.push_manifest(repo, tag, manifest, OCI_MANIFEST)
    return digest, manifest


def test_push_monolithic_and_chunked(
    registry: Any, coop_env: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = _client(registry.host, coop_env)
    digest, raw = _push_image(client, "scratch/pushed", "mono", tmp_path)
    got = client.get_manifest("scratch/pushed", "mono")
    assert (got.raw, got.digest, got.media_type) == (raw, digest, OCI_MANIFEST)

    monkeypatch.setattr(registry_module, "MONOLITHIC_LIMIT", 1000)
    monkeypatch.setattr(registry_module, "UPLOAD_CHUNK", 4096)
    big = tmp_path / "big"
    big.write_bytes(bytes(range(256)) * 50 + f"{time.time_ns()}".encode())
    big_digest = "sha256:" + hashlib.sha256(big.read_bytes()).hexdigest()
    assert not client.blob_exists("scratch/pushed", big_digest)
    client.push_blob("scratch/pushed", big_digest, big)
    assert client.blob_exists("scratch/pushed", big_digest)
    layout = Layout(tmp_path / "oci")
    client.fetch_blob(
        "scratch/pushed", Descriptor(OCI_LAYER_TAR, big_digest, big.stat().st_size), layout
    )
    assert layout.read_blob(big_digest) == big.read_bytes()


def _events_since(hub: Any, start: int, count: int) -> list[dict[str, Any]]:
    """The hub's events after ``start``, or [] (falsy) while fewer than ``count``."""
    events: list[dict[str, Any]] = hub.events()[start:]
    return events if len(events) >= count else []


def test_hub_tokens_are_per_repository(hub: Any, coop_env: Any) -> None:
    creds = Credentials(hub.username, hub.password)
    client = RegistryClient(hub.host, environ={"HOME": str(coop_env.home)}, credentials=creds)
    public = parse_reference(hub.ref("library/busybox:1"))
    private = parse_reference(hub.ref("private/busybox:1"))
    start = len(hub.events())
    assert client.get_manifest(public.repository, public.target).raw
    assert client.get_manifest(private.repository, private.target).raw
    # Back to the first repository: its own token is still cached, no new dance.
    assert client.get_manifest(public.repository, public.target).raw
    # The hub logs a request after answering it: wait for all seven to be written
    # (401, token, 200 for each repository, then one 200).
    events = wait_for(lambda: _events_since(hub, start, 7), 10, "hub events")
    tokens = [e for e in events if e["path"].startswith("/token")]
    assert [e["auth"] for e in tokens] == ["basic", "basic"]
    assert [(e["status"], e["auth"]) for e in events[6:]] == [(200, "bearer")]


def test_hub_private_without_credentials_is_auth_error(hub: Any, coop_env: Any) -> None:
    client = _client(hub.host, coop_env)
    private = parse_reference(hub.ref("private/busybox:1"))
    with pytest.raises(AuthError) as err:
        client.get_manifest(private.repository, private.target)
    assert "\n" not in str(err.value)


def test_hub_blob_redirect_drops_authorization(hub: Any, coop_env: Any, tmp_path: Path) -> None:
    creds = Credentials(hub.username, hub.password)
    client = RegistryClient(hub.host, environ={"HOME": str(coop_env.home)}, credentials=creds)
    private = parse_reference(hub.ref("private/busybox:1"))
    manifest = parse_manifest(client.get_manifest(private.repository, private.target).raw)
    assert isinstance(manifest, ImageManifest)
    layout = Layout(tmp_path / "oci")
    start = len(hub.events())
    client.fetch_blob(private.repository, manifest.layers[0], layout)
    assert layout.verify_blob(manifest.layers[0].digest)

    def cdn_events() -> list[dict[str, Any]]:
        return [e for e in hub.events()[start:] if e["listener"] == "cdn"]

    cdn = wait_for(cdn_events, 10, "the CDN's event")
    assert [(e["status"], e["auth"]) for e in cdn] == [(200, "")]
