"""pull_image against the bench registry and Docker-Hub-like front (real servers).

A counting TCP relay in front of the registry shows which HTTP requests a pull really
makes: that is how "the second pull downloads nothing" and "the download resumed with a
Range request" are proven, rather than trusting our own progress events.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from coop_build.errors import AuthError, DigestMismatchError, RegistryError, UnsupportedImageError
from coop_build.layout import Layout
from coop_build.manifest import (
    OCI_LAYER_GZIP,
    OCI_LAYER_TAR,
    OCI_MANIFEST,
    host_platform,
    parse_manifest,
)
from coop_build.paths import CoopPaths
from coop_build.progress import LayerProgress, ProgressEvent
from coop_build.pull import PulledImage, pull_image, umoci_tag_for
from coop_build.reference import parse_reference

pytestmark = pytest.mark.registry

_REQUEST = re.compile(
    rb"(GET|HEAD|POST|PUT|PATCH|DELETE) (\S+) HTTP/1\.[01]\r\n(.*?)\r\n\r\n", re.DOTALL
)


class Relay:
    """A loopback TCP relay to ``upstream`` that records what clients sent."""

    def __init__(self, upstream: str) -> None:
        host, port = upstream.rsplit(":", 1)
        self._upstream = (host, int(port))
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.host = f"127.0.0.1:{self._listener.getsockname()[1]}"
        self._sent: list[bytearray] = []
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._accepting = threading.Thread(target=self._accept, daemon=True)
        self._accepting.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(self._upstream)
            log = bytearray()
            with self._lock:
                self._sent.append(log)
                self._sockets += [client, server]
                for src, dst, rec in ((client, server, log), (server, client, None)):
                    t = threading.Thread(target=self._pump, args=(src, dst, rec), daemon=True)
                    self._threads.append(t)
                    t.start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket, log: bytearray | None) -> None:
        try:
            while data := src.recv(65536):
                if log is not None:
                    log += data
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def requests(self) -> list[tuple[str, str, str]]:
        """(method, path, raw headers) of every request seen so far."""
        with self._lock:
            logs = [bytes(b) for b in self._sent]
        return [
            (m.group(1).decode(), m.group(2).decode(), m.group(3).decode("latin-1"))
            for log in logs
            for m in _REQUEST.finditer(log)
        ]

    def blob_gets(self) -> list[tuple[str, str, str]]:
        return [r for r in self.requests() if r[0] == "GET" and "/blobs/sha256:" in r[1]]

    def close(self) -> None:
        # shutdown() wakes the thread blocked in accept(); close() alone would not.
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._accepting.join(timeout=5)
        with self._lock:
            sockets, threads = list(self._sockets), list(self._threads)
        for s in sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
        for t in threads:
            t.join(timeout=5)


@pytest.fixture
def relay(registry: Any) -> Iterator[Relay]:
    r = Relay(registry.host)
    yield r
    r.close()


@pytest.fixture
def paths(coop_env: Any) -> CoopPaths:
    return CoopPaths(Path(coop_env.coop_home))


def _via(relay: Relay, full_ref: str) -> str:
    """The same image, addressed through the relay."""
    _, rest = full_ref.split("/", 1)
    return f"{relay.host}/{rest}"


def _check_umoci_readable(paths: CoopPaths, image: PulledImage, tmp_path: Path) -> Path:
    dest = tmp_path / ("unpacked-" + image.umoci_tag[:16])
    proc = subprocess.run(
        [
            "umoci",
            "raw",
            "unpack",
            "--rootless",
            "--image",
            f"{paths.cache_oci}:{image.umoci_tag}",
            str(dest),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return dest


@pytest.mark.parametrize("name", ["busybox", "layered", "layered_v2s2", "multiarch", "zstd"])
def test_pull_each_image(name: str, test_images: Any, paths: CoopPaths, tmp_path: Path) -> None:
    events: list[ProgressEvent] = []
    ref = parse_reference(getattr(test_images, name))
    image = pull_image(ref, paths=paths, progress=events.append, platform="linux/amd64")
    assert image.reference == ref
    assert image.umoci_tag == umoci_tag_for(image.digest)
    assert image.config["architecture"] == "amd64"
    layout = Layout(paths.cache_oci)
    served = parse_manifest(layout.read_blob(image.digest))
    for digest in image.layer_digests:
        assert layout.verify_blob(digest)
    # The tagged manifest is OCI-only, single-platform, plain or gzip layers.
    tagged = layout.resolve(image.umoci_tag)
    assert tagged is not None
    assert tagged.media_type == OCI_MANIFEST
    converted = json.loads(layout.read_blob(tagged.digest))
    assert {layer["mediaType"] for layer in converted["layers"]} <= {OCI_LAYER_GZIP, OCI_LAYER_TAR}
    assert converted["config"]["digest"] == served.config.digest  # type: ignore[union-attr]
    done = {e.digest for e in events if isinstance(e, LayerProgress) and e.done == e.total}
    assert set(image.layer_digests) <= done
    if name == "zstd":
        assert {layer["mediaType"] for layer in converted["layers"]} == {OCI_LAYER_TAR}
        assert [layer["digest"] for layer in converted["layers"]] == image.config["rootfs"][
            "diff_ids"
        ]
    rootfs = _check_umoci_readable(paths, image, tmp_path)
    assert (rootfs / "bin").is_dir()
    if name.startswith("layered"):
        assert (rootfs / "opaque/new.txt").read_text() == "new\n"
        assert not (rootfs / "opaque/old1.txt").exists()
        assert not (rootfs / "data/remove-me.txt").exists()


def test_second_pull_downloads_nothing_and_works_offline(
    relay: Relay, test_images: Any, paths: CoopPaths, registry: Any
) -> None:
    ref = parse_reference(_via(relay, test_images.layered))
    first = pull_image(ref, paths=paths)
    assert len(relay.blob_gets()) == 3  # config + 2 layers
    before = len(relay.requests())

    events: list[ProgressEvent] = []
    second = pull_image(ref, paths=paths, progress=events.append)
    assert second == first
    assert len(relay.requests()) == before  # not even the manifest: cache-only resolution
    assert events and all(isinstance(e, LayerProgress) and e.cached for e in events)

    relay.close()  # the registry is now unreachable through this host
    assert pull_image(ref, paths=paths) == first
    with pytest.raises(RegistryError, match="cannot reach registry"):
        pull_image(ref, paths=paths, refresh=True)

    # refresh re-resolves the tag against the registry but reuses verified blobs.
    again = Relay(registry.host)
    try:
        ref2 = parse_reference(_via(again, test_images.layered))
        pull_image(ref2, paths=paths)
        assert again.blob_gets() == []
        assert [r[0] for r in again.requests()] == ["GET"]  # the manifest, by tag
        pull_image(ref2, paths=paths, refresh=True)
        assert again.blob_gets() == []
        assert len(again.requests()) == 2
    finally:
        again.close()


def test_pull_by_digest_from_cache_needs_no_network(
    test_images: Any, paths: CoopPaths, registry: Any
) -> None:
    r = Relay(registry.host)
    try:
        first = pull_image(parse_reference(_via(r, test_images.multiarch)), paths=paths)
    finally:
        r.close()
    digest = test_images.digests["multiarch"]
    pinned = parse_reference(f"{r.host}/library/multiarch@{digest}")
    image = pull_image(pinned, paths=paths)  # relay closed: nothing may be asked
    assert image.digest == first.digest
    assert image.config["architecture"] == host_platform().split("/")[1]


def test_interrupted_download_resumes_with_range(
    relay: Relay, test_images: Any, paths: CoopPaths, registry: Any
) -> None:
    # Learn the layer (a helper pull into another cache), then plant half of it.
    scratch = CoopPaths(paths.home / "scratch")
    whole = pull_image(parse_reference(test_images.busybox), paths=scratch)
    layer = whole.layer_digests[0]
    data = Layout(scratch.cache_oci).read_blob(layer)
    assert len(data) > 1000
    layout = Layout(paths.cache_oci)
    half = len(data) // 2
    layout.partial_path(layer).write_bytes(data[:half])

    image = pull_image(parse_reference(_via(relay, test_images.busybox)), paths=paths)
    gets = [r for r in relay.blob_gets() if layer in r[1]]
    assert len(gets) == 1
    assert re.search(rf"(?im)^range: bytes={half}-\s*$", gets[0][2]), gets[0][2]
    assert layout.read_blob(layer) == data
    assert not layout.partial_path(layer).exists()
    assert image.layer_digests == (layer,)


def test_corrupt_cached_blob_is_detected_and_fetched_again(
    relay: Relay, test_images: Any, paths: CoopPaths
) -> None:
    ref = parse_reference(_via(relay, test_images.busybox))
    image = pull_image(ref, paths=paths)
    layout = Layout(paths.cache_oci)
    layer = image.layer_digests[0]
    good = layout.read_blob(layer)
    corrupt = bytearray(good)
    corrupt[len(corrupt) // 2] ^= 0xFF
    layout.blob_path(layer).write_bytes(bytes(corrupt))
    gets_before = len(relay.blob_gets())

    assert pull_image(ref, paths=paths) == image
    assert [r for r in relay.blob_gets()[gets_before:] if layer in r[1]]
    assert hashlib.sha256(layout.read_blob(layer)).hexdigest() == layer.split(":")[1]


def test_platform_selection(test_images: Any, paths: CoopPaths, tmp_path: Path) -> None:
    ref = parse_reference(test_images.multiarch)
    arm = pull_image(ref, paths=paths, platform="linux/arm64")
    assert arm.config["architecture"] == "arm64"
    rootfs = _check_umoci_readable(paths, arm, tmp_path)
    assert (rootfs / "etc/coop-test-arch").read_text() == "arm64\n"
    amd = pull_image(ref, paths=paths, platform="linux/amd64")
    assert amd.digest != arm.digest
    with pytest.raises(UnsupportedImageError) as err:
        pull_image(ref, paths=paths, platform="linux/s390x")
    assert "linux/amd64" in str(err.value)
    assert "linux/arm64" in str(err.value)
    # A single-platform image asked for another platform explicitly.
    with pytest.raises(UnsupportedImageError, match="is linux/amd64, not linux/arm64"):
        pull_image(parse_reference(test_images.busybox), paths=paths, platform="linux/arm64")


def test_refused_port_fails_fast(paths: CoopPaths) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(RegistryError) as err:
        pull_image(parse_reference(f"127.0.0.1:{port}/library/busybox:1"), paths=paths)
    assert time.monotonic() - started < 5
    assert "Connection refused" in str(err.value)
    assert "\n" not in str(err.value)


def test_unknown_tag_names_repository_and_tag(test_images: Any, paths: CoopPaths) -> None:
    ref = parse_reference(test_images.busybox).with_tag("no-such-tag")
    with pytest.raises(RegistryError) as err:
        pull_image(ref, paths=paths)
    assert "library/busybox:no-such-tag" in str(err.value)
    assert err.value.code == "REGISTRY_NOT_FOUND"


def _write_docker_config(home: Path, host: str, user: str, password: str) -> None:
    import base64

    config = home / ".docker" / "config.json"
    config.parent.mkdir(parents=True, exist_ok=True)
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    config.write_text(json.dumps({"auths": {host: {"auth": token}}}))


def test_hub_anonymous_pull(hub: Any, paths: CoopPaths, coop_env: Any) -> None:
    image = pull_image(
        parse_reference(hub.ref("library/busybox:1")),
        paths=paths,
        environ={"HOME": str(coop_env.home)},
    )
    assert image.layer_digests


def test_hub_private_image_needs_credentials(hub: Any, paths: CoopPaths, coop_env: Any) -> None:
    env = {"HOME": str(coop_env.home)}
    ref = parse_reference(hub.ref("private/busybox:1"))
    with pytest.raises(AuthError) as err:
        pull_image(ref, paths=paths, environ=env)
    assert "no credentials" in str(err.value)

    _write_docker_config(Path(coop_env.home), hub.host, hub.username, "wrong-password")
    with pytest.raises(AuthError) as err:
        pull_image(ref, paths=paths, environ=env)
    assert "wrong-password" not in str(err.value)

    # Blob GETs are redirected to another host that refuses Authorization headers.
    _write_docker_config(Path(coop_env.home), hub.host, hub.username, hub.password)
    image = pull_image(ref, paths=paths, environ=env)
    layout = Layout(paths.cache_oci)
    assert all(layout.verify_blob(d) for d in image.layer_digests)


def test_wrong_blob_from_registry_is_rejected(
    registry: Any, paths: CoopPaths, coop_env: Any
) -> None:
    """Corrupt a blob inside the registry's own storage: the download must be refused."""
    from coop_build.manifest import Descriptor
    from coop_build.registry import RegistryClient

    payload = f"unique {time.time_ns()} ".encode() * 3000
    digest = "sha256:" + hashlib.sha256(payload).hexdigest()
    src = paths.home / "payload"
    src.parent.mkdir(parents=True, exist_ok=True)
    src.write_bytes(payload)
    client = RegistryClient(registry.host, environ={"HOME": str(coop_env.home)})
    client.push_blob("scratch/corrupt", digest, src)
    stored = (
        Path(registry.root) / "docker/registry/v2/blobs/sha256" / digest[7:9] / digest[7:] / "data"
    )
    assert stored.read_bytes() == payload
    stored.write_bytes(payload.replace(b"unique", b"UNIQUE", 1))

    layout = Layout(paths.cache_oci)
    with pytest.raises(DigestMismatchError):
        client.fetch_blob(
            "scratch/corrupt", Descriptor(OCI_LAYER_GZIP, digest, len(payload)), layout
        )
    assert not layout.has_blob(digest)
    assert not layout.partial_path(digest).exists()
