"""unpack_image against layouts umoci itself made: layers, whiteouts, hostile tar entries."""

from __future__ import annotations

import io
import os
import shutil
import tarfile
from pathlib import Path

import pytest

from coop_build.errors import StoreError, ToolError
from coop_build.umoci import run_umoci
from coop_build.unpack import unpack_image
from support.require import needs

pytestmark = needs(shutil.which("umoci") is not None, "umoci not installed")


@pytest.fixture
def layout(tmp_path: Path) -> Path:
    """Tag v1: files, a symlink, a hardlink; v2: one file deleted, a dir replaced."""
    lay = tmp_path / "layout"
    bundle = tmp_path / "bundle"
    run_umoci(["init", "--layout", lay])
    run_umoci(["new", "--image", f"{lay}:v0"])
    run_umoci(["unpack", "--rootless", "--image", f"{lay}:v0", bundle])
    root = bundle / "rootfs"
    (root / "etc").mkdir()
    (root / "etc" / "keep").write_text("keep\n")
    (root / "etc" / "gone").write_text("gone\n")
    (root / "dir" / "sub").mkdir(parents=True)
    (root / "dir" / "sub" / "old").write_text("old\n")
    (root / "link").symlink_to("etc/keep")
    os.link(root / "etc" / "keep", root / "hard")
    run_umoci(["repack", "--image", f"{lay}:v1", bundle])
    (root / "etc" / "gone").unlink()
    shutil.rmtree(root / "dir" / "sub")
    (root / "dir" / "sub").mkdir()
    (root / "dir" / "sub" / "new").write_text("new\n")
    run_umoci(["repack", "--image", f"{lay}:v2", bundle])
    return lay


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def test_unpack_applies_layers_and_whiteouts(tmp_path: Path, layout: Path) -> None:
    v1 = tmp_path / "out" / "v1"
    unpack_image(layout, "v1", v1)
    assert tree(v1) == {"etc", "etc/keep", "etc/gone", "dir", "dir/sub", "dir/sub/old",
                        "link", "hard"}
    v2 = tmp_path / "out" / "v2"
    unpack_image(layout, "v2", v2)
    assert tree(v2) == {"etc", "etc/keep", "dir", "dir/sub", "dir/sub/new", "link", "hard"}
    assert os.readlink(v2 / "link") == "etc/keep"
    assert os.stat(v2 / "hard").st_ino == os.stat(v2 / "etc" / "keep").st_ino
    assert (v2 / "etc" / "keep").stat().st_uid == os.getuid()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["v1", "v2"]  # no scratch


def test_dest_must_not_exist_and_failures_leave_nothing(tmp_path: Path, layout: Path) -> None:
    dest = tmp_path / "out" / "x"
    dest.mkdir(parents=True)
    with pytest.raises(StoreError, match="already exists"):
        unpack_image(layout, "v1", dest)
    with pytest.raises(ToolError, match="tag is not found: missing"):
        unpack_image(layout, "missing", tmp_path / "out" / "y")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["x"]
    with pytest.raises(StoreError, match="not an OCI image layout"):
        unpack_image(tmp_path, "v1", tmp_path / "out" / "z")
    with pytest.raises(StoreError, match="invalid tag"):
        unpack_image(layout, "a/b", tmp_path / "out" / "z")


def add_layer(layout: Path, src: str, dst: str, members: list[tarfile.TarInfo],
              data: dict[str, bytes], tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for info in members:
            payload = data.get(info.name)
            if payload is not None:
                info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload) if payload is not None else None)
    blob = tmp_path / f"{dst}.tar"
    blob.write_bytes(buf.getvalue())
    run_umoci(["raw", "add-layer", "--image", f"{layout}:{src}", "--tag", dst, blob])


def test_layers_cannot_write_outside_the_rootfs(tmp_path: Path, layout: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    evil = tarfile.TarInfo("evil")
    evil.type = tarfile.SYMTYPE
    evil.linkname = str(outside)
    dotdot = tarfile.TarInfo("../../outside/dotdot")
    add_layer(layout, "v1", "evil1", [evil, dotdot], {"../../outside/dotdot": b"x"}, tmp_path)
    through = tarfile.TarInfo("evil/through-link")
    add_layer(layout, "evil1", "evil2", [through], {"evil/through-link": b"x"}, tmp_path)
    dest = tmp_path / "out" / "evil"
    try:
        unpack_image(layout, "evil2", dest)
    except ToolError:
        pass  # refusing is fine too; writing outside is not
    else:  # umoci 0.4.7 keeps both inside, resolving as if the rootfs were /
        assert (dest / "outside" / "dotdot").is_file()
        assert (dest / str(outside).lstrip("/") / "through-link").is_file()
    assert list(outside.iterdir()) == []
