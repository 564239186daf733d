"""The OCI layout cache: structure, content addressing, tags under concurrent writers."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import shutil
import subprocess
from pathlib import Path

import pytest

from coop_build.errors import DigestMismatchError
from coop_build.layout import Layout
from coop_build.manifest import OCI_MANIFEST, Descriptor
from support.require import require


def test_created_on_demand(tmp_path: Path) -> None:
    layout = Layout(tmp_path / "oci")
    assert not (tmp_path / "oci").exists()
    layout.ensure()
    assert json.loads((tmp_path / "oci/oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads((tmp_path / "oci/index.json").read_text())
    assert index["schemaVersion"] == 2
    assert index["manifests"] == []


def test_a_new_layout_is_readable_by_umoci(tmp_path: Path) -> None:
    require(shutil.which("umoci") is not None, "umoci not installed")
    Layout(tmp_path / "oci").ensure()
    out = subprocess.run(
        ["umoci", "ls", "--layout", str(tmp_path / "oci")],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == ""


def test_put_bytes_is_content_addressed(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    desc = layout.put_bytes(b"hello", "text/plain")
    digest = "sha256:" + hashlib.sha256(b"hello").hexdigest()
    assert desc == Descriptor("text/plain", digest, 5)
    assert layout.has_blob(digest)
    assert layout.blob_path(digest) == tmp_path / "blobs/sha256" / digest[7:]
    assert layout.read_blob(digest) == b"hello"
    assert layout.put_bytes(b"hello").digest == digest
    assert layout.verify_blob(digest, 5)


def test_corrupt_blob_is_detected_and_removed(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    digest = layout.put_bytes(b"payload").digest
    layout.blob_path(digest).write_bytes(b"paYload")
    assert not layout.verify_blob(digest)
    assert not layout.has_blob(digest)


def test_commit_partial_checks_digest(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    good = "sha256:" + hashlib.sha256(b"abc").hexdigest()
    layout.partial_path(good).write_bytes(b"abc")
    assert layout.commit_partial(good, size=3) == layout.blob_path(good)
    assert layout.read_blob(good) == b"abc"
    assert not layout.partial_path(good).exists()
    bad = "sha256:" + "0" * 64
    layout.partial_path(bad).write_bytes(b"abc")
    with pytest.raises(DigestMismatchError):
        layout.commit_partial(bad)
    assert not layout.partial_path(bad).exists()
    assert not layout.has_blob(bad)


def test_malformed_digest_never_becomes_a_path(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    with pytest.raises(Exception, match="malformed digest"):
        layout.blob_path("sha256:../../../etc/passwd")


def test_tag_and_resolve_replace_previous(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    first = layout.put_bytes(b"{}", OCI_MANIFEST)
    second = layout.put_bytes(b"{ }", OCI_MANIFEST)
    layout.tag("t", first)
    layout.tag("u", first)
    layout.tag("t", second)
    assert layout.resolve("t") == Descriptor(
        OCI_MANIFEST, second.digest, 3, annotations={"org.opencontainers.image.ref.name": "t"}
    )
    assert layout.resolve("u") is not None
    assert layout.resolve("nope") is None
    assert len(json.loads((tmp_path / "index.json").read_text())["manifests"]) == 2
    layout.set_annotation("k", "v")
    assert layout.annotation("k") == "v"
    assert layout.resolve("t") is not None  # annotations do not disturb tags


def _tag_many(root: str, prefix: str) -> None:
    layout = Layout(Path(root))
    for i in range(25):
        desc = layout.put_bytes(f"{prefix}{i}".encode(), OCI_MANIFEST)
        layout.tag(f"{prefix}-{i}", desc)
        layout.set_annotation(f"{prefix}.{i}", desc.digest)


def test_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_tag_many, args=(str(tmp_path), f"p{n}")) for n in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    layout = Layout(tmp_path)
    for n in range(4):
        for i in range(25):
            assert layout.resolve(f"p{n}-{i}") is not None
            assert layout.annotation(f"p{n}.{i}") is not None
