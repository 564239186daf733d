"""The registry fixture and the images the bench pushes to it.

Checked through the registry's HTTP API (what coop's puller sees) and with umoci, so a
broken fixture is caught here rather than as a puzzling failure in a coop test.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest
import requests
import zstandard

from support.images import REQUIRED_APPLETS, TestImages, read_manifest
from support.procs import pid_alive
from support.servers import Registry

pytestmark = pytest.mark.registry

NO_PROXY = {"http": "", "https": ""}


def _split(ref: str) -> tuple[str, str, str]:
    host, rest = ref.split("/", 1)
    repo, tag = rest.rsplit(":", 1)
    return host, repo, tag


def _blob(registry: Registry, repo: str, digest: str) -> bytes:
    resp = requests.get(f"{registry.url}/v2/{repo}/blobs/{digest}", timeout=30,
                        proxies=NO_PROXY)
    resp.raise_for_status()
    assert "sha256:" + hashlib.sha256(resp.content).hexdigest() == digest
    return resp.content


def _layers(registry: Registry, ref: str,
            digest: str | None = None) -> tuple[dict[str, Any], list[tarfile.TarFile]]:
    """(config, one open tar per layer) of a single-platform image (or ``digest`` in it)."""
    _host, repo, tag = _split(ref)
    _kind, manifest = read_manifest(registry.url, repo, digest or tag)
    config = json.loads(_blob(registry, repo, manifest["config"]["digest"]))
    tars = []
    for layer in manifest["layers"]:
        data = _blob(registry, repo, layer["digest"])
        plain = (zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data)).read()
                 if layer["mediaType"].endswith("zstd") else gzip.decompress(data))
        tars.append((plain, tarfile.open(fileobj=io.BytesIO(plain))))  # noqa: SIM115
    diff_ids = ["sha256:" + hashlib.sha256(plain).hexdigest() for plain, _ in tars]
    assert config["rootfs"]["diff_ids"] == diff_ids
    return config, [t for _, t in tars]


def _read(tar: tarfile.TarFile, name: str) -> bytes:
    member = tar.extractfile(name)
    assert member is not None, name
    return member.read()


def test_registry_answers_on_loopback(registry: Registry) -> None:
    assert registry.host.startswith("127.0.0.1:")
    assert registry.url == f"http://{registry.host}"
    assert pid_alive(registry.pid)
    resp = requests.get(registry.url + "/v2/", timeout=5, proxies=NO_PROXY)
    assert resp.status_code == 200
    assert resp.headers["Docker-Distribution-API-Version"] == "registry/2.0"


def test_refs_are_full_references_in_the_session_registry(
        registry: Registry, test_images: TestImages) -> None:
    assert test_images.busybox == f"{registry.host}/library/busybox:1"
    assert test_images.layered == f"{registry.host}/library/layered:1"
    assert test_images.layered_v2s2 == f"{registry.host}/library/layered-v2s2:1"
    assert test_images.multiarch == f"{registry.host}/library/multiarch:1"
    assert test_images.zstd == f"{registry.host}/library/zstd:1"


def test_busybox_is_one_gzip_layer_with_a_usable_userland(
        registry: Registry, test_images: TestImages, tmp_path: Path) -> None:
    _host, repo, tag = _split(test_images.busybox)
    kind, _manifest = read_manifest(registry.url, repo, tag)
    assert kind == "application/vnd.oci.image.manifest.v1+json"
    config, (tar,) = _layers(registry, test_images.busybox)
    assert config["architecture"] == "amd64" and config["os"] == "linux"
    names = set(tar.getnames())
    for applet in REQUIRED_APPLETS:
        member = tar.getmember(f"bin/{applet}")
        assert member.issym() and member.linkname == "/bin/busybox", applet
    for d in ("etc", "tmp", "proc", "dev", "root", "home", "var", "workspace"):
        assert tar.getmember(d).isdir(), d
    assert tar.getmember("tmp").mode == 0o1777
    assert _read(tar, "etc/coop-test-image") == b"busybox\n"
    assert _read(tar, "etc/passwd").startswith(b"root:x:0:0:")
    assert b"root:x:0:" in _read(tar, "etc/group")
    assert "usr/bin/env" in names
    # The binary is the static busybox: it runs outside any rootfs.
    binary = tmp_path / "busybox"
    binary.write_bytes(_read(tar, "bin/busybox"))
    binary.chmod(0o755)
    out = subprocess.run([str(binary), "echo", "static"], capture_output=True, text=True,
                         check=True)
    assert out.stdout == "static\n"


def test_layered_top_layer_has_whiteouts_hardlink_and_symlinks(
        registry: Registry, test_images: TestImages) -> None:
    _config, (base, top) = _layers(registry, test_images.layered)
    assert _read(base, "data/remove-me.txt") == b"bye\n"
    assert _read(base, "opaque/sub/old2.txt") == b"old2\n"
    assert top.getmember("data/.wh.remove-me.txt").isfile()
    assert top.getmember("opaque/.wh..wh..opq").isfile()
    assert _read(top, "opaque/new.txt") == b"new\n"
    link = top.getmember("hl/b.txt")
    assert link.islnk() and link.linkname == "hl/a.txt"
    assert _read(top, "hl/a.txt") == b"hardlinked\n"
    assert top.getmember("links/rel").linkname == "../data/keep.txt"
    assert top.getmember("links/abs").linkname == "/data/keep.txt"
    assert _read(top, "etc/coop-test-image") == b"layered\n"


def test_layered_v2s2_is_docker_typed_with_the_same_blobs(
        registry: Registry, test_images: TestImages) -> None:
    _h, repo, tag = _split(test_images.layered_v2s2)
    kind, docker = read_manifest(registry.url, repo, tag)
    assert kind == "application/vnd.docker.distribution.manifest.v2+json"
    assert docker["config"]["mediaType"] == (
        "application/vnd.docker.container.image.v1+json")
    _h, repo, tag = _split(test_images.layered)
    _kind, oci = read_manifest(registry.url, repo, tag)
    assert [la["digest"] for la in docker["layers"]] == [
        la["digest"] for la in oci["layers"]]
    assert {la["mediaType"] for la in docker["layers"]} == {
        "application/vnd.docker.image.rootfs.diff.tar.gzip"}


def test_multiarch_index_has_amd64_and_arm64(
        registry: Registry, test_images: TestImages) -> None:
    _h, repo, tag = _split(test_images.multiarch)
    kind, index = read_manifest(registry.url, repo, tag)
    assert kind == "application/vnd.oci.image.index.v1+json"
    platforms = {m["platform"]["architecture"]: m for m in index["manifests"]}
    assert set(platforms) == {"amd64", "arm64"}
    for arch, entry in platforms.items():
        config, tars = _layers(registry, test_images.multiarch, entry["digest"])
        assert config["architecture"] == arch
        assert _read(tars[-1], "etc/coop-test-arch") == f"{arch}\n".encode()


def test_zstd_layers_are_zstd(registry: Registry, test_images: TestImages) -> None:
    _h, repo, tag = _split(test_images.zstd)
    _kind, manifest = read_manifest(registry.url, repo, tag)
    assert [la["mediaType"] for la in manifest["layers"]] == [
        "application/vnd.oci.image.layer.v1.tar+zstd"]
    _config, (tar,) = _layers(registry, test_images.zstd)
    assert _read(tar, "etc/coop-test-image") == b"busybox\n"


def test_digests_are_what_the_registry_serves(
        registry: Registry, test_images: TestImages) -> None:
    for name in ("busybox", "layered", "layered_v2s2", "multiarch", "zstd"):
        _h, repo, tag = _split(getattr(test_images, name))
        resp = requests.get(f"{registry.url}/v2/{repo}/manifests/{tag}", timeout=5,
                            proxies=NO_PROXY, headers={"Accept": ", ".join([
                                "application/vnd.oci.image.manifest.v1+json",
                                "application/vnd.oci.image.index.v1+json",
                                "application/vnd.docker.distribution.manifest.v2+json"])})
        assert test_images.digests[name] == "sha256:" + hashlib.sha256(resp.content).hexdigest()


def test_umoci_applies_whiteouts_opaque_dirs_and_hardlinks(
        test_images: TestImages, tmp_path: Path) -> None:
    """The layered image means what the tests expect once unpacked by an independent tool."""
    layout = tmp_path / "oci"
    subprocess.run(["skopeo", "copy", "--quiet", "--src-tls-verify=false",
                    f"docker://{test_images.layered}", f"oci:{layout}:t"],
                   check=True, capture_output=True, env={**os.environ, "HOME": str(tmp_path)})
    bundle = tmp_path / "bundle"
    subprocess.run(["umoci", "unpack", "--rootless", "--image", f"{layout}:t", str(bundle)],
                   check=True, capture_output=True)
    root = bundle / "rootfs"
    assert (root / "data" / "keep.txt").read_text() == "keep\n"
    assert not (root / "data" / "remove-me.txt").exists()
    assert sorted(p.name for p in (root / "opaque").iterdir()) == ["new.txt"]
    assert (root / "hl" / "a.txt").stat().st_ino == (root / "hl" / "b.txt").stat().st_ino
    assert (root / "links" / "rel").resolve() == (root / "data" / "keep.txt")
    assert os.readlink(root / "links" / "abs") == "/data/keep.txt"
    assert (root / "etc" / "coop-test-image").read_text() == "layered\n"
