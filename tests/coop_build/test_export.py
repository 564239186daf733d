"""Export of overlay upper dirs as OCI layers, import back, and prebuilt push/fetch.

The layer tests make real overlay-format dirs (char 0:0 whiteouts, ``user.overlay.opaque``,
files of other uids) inside a real user namespace and convert them there, as the builder
does. The registry tests push real builds to the bench registry on loopback and check
the result with skopeo and umoci, which share none of our code.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import secrets
import socket
import stat
import subprocess
import sys
import tarfile
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from coop_build.errors import StoreError
from coop_build.export import (
    LABEL_BUILD_KEY,
    LABEL_STEPS,
    ExportedLayer,
    StepInfo,
    export_layer,
    image_config,
    import_layer,
    parse_steps_label,
    push_target,
)
from coop_build.idmap import IdMap, choose_idmap
from coop_build.layout import Layout
from coop_build.namespace import hand_over_tree, remove_tree, run_in_userns
from support.require import require

# Inside the namespace: the overlay dialect of a step's upper dir, with one file per case.
_MAKE_UPPER = textwrap.dedent(
    """
    import os, sys
    root = sys.argv[1]
    os.makedirs(f"{root}/etc/opaque")
    os.makedirs(f"{root}/usr/bin")
    os.mknod(f"{root}/etc/removed", 0o20000, os.makedev(0, 0))  # S_IFCHR 0:0 whiteout
    os.setxattr(f"{root}/etc/opaque", "user.overlay.opaque", b"y")
    os.setxattr(f"{root}/etc/opaque", "user.keep", b"kept")
    with open(f"{root}/etc/opaque/new.conf", "w") as f:
        f.write("fresh\\n")
    with open(f"{root}/usr/bin/tool", "w") as f:
        f.write("#!/bin/sh\\necho tool\\n")
    os.chmod(f"{root}/usr/bin/tool", 0o755)
    os.link(f"{root}/usr/bin/tool", f"{root}/usr/bin/tool-alias")
    os.symlink("tool", f"{root}/usr/bin/tool-link")
    with open(f"{root}/etc/owned", "w") as f:
        f.write("owned by 100\\n")
    os.chown(f"{root}/etc/owned", 100, 100)
    os.utime(f"{root}/etc/owned", (1_700_000_000, 1_700_000_000))
    """
)


def _full_idmap() -> IdMap:
    """A map with sub-ids: the user's range, or root's (coop's own range)."""
    idmap = choose_idmap(environ={})
    require(idmap.full, "this user has no subordinate id range")
    return idmap


@pytest.fixture
def idmap() -> IdMap:
    return _full_idmap()


@pytest.fixture
def scratch(tmp_path: Path, idmap: IdMap) -> Iterator[Path]:
    """A dir for trees holding sub-id files, removed in the namespace afterwards."""
    path = tmp_path / "scratch"
    path.mkdir()
    yield path
    remove_tree(path, idmap)


def make_upper(dest: Path, idmap: IdMap) -> Path:
    """As the build's namespace makes it. Root's is coop's range, which may not walk the
    test's 0700 directories: root makes it on the host and hands it over, as coop does."""
    if os.geteuid() == 0:
        subprocess.run([sys.executable, "-c", _MAKE_UPPER, str(dest)], check=True)
        hand_over_tree(dest, idmap)
    else:
        run_in_userns([sys.executable, "-c", _MAKE_UPPER, str(dest)], idmap=idmap)
    return dest


def members(blob: Path) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(blob, "r:gz") as tar:
        return {m.name: m for m in tar.getmembers()}


def test_export_translates_overlay_to_oci(scratch: Path, idmap: IdMap) -> None:
    upper = make_upper(scratch / "upper", idmap)
    layout = Layout(scratch / "oci")
    layer = export_layer(upper, layout, scratch / "tmp", idmap=idmap)
    blob = layout.blob_path(layer.digest)

    data = blob.read_bytes()
    assert "sha256:" + hashlib.sha256(data).hexdigest() == layer.digest
    assert len(data) == layer.size
    assert "sha256:" + hashlib.sha256(gzip.decompress(data)).hexdigest() == layer.diff_id

    entries = members(blob)
    assert "etc/removed" not in entries
    assert entries["etc/.wh.removed"].isreg() and entries["etc/.wh.removed"].size == 0
    assert entries["etc/opaque/.wh..wh..opq"].isreg()
    opaque = entries["etc/opaque"]
    assert opaque.isdir()
    assert opaque.pax_headers.get("SCHILY.xattr.user.keep") == "kept"
    for info in entries.values():
        assert not any("overlay" in key for key in info.pax_headers), info.name
    owned = entries["etc/owned"]
    assert (owned.uid, owned.gid) == (100, 100)
    assert owned.mtime == 1_700_000_000
    assert entries["usr/bin/tool"].mode == 0o755
    alias = entries["usr/bin/tool-alias"]
    assert alias.islnk() and alias.linkname == "usr/bin/tool"
    link = entries["usr/bin/tool-link"]
    assert link.issym() and link.linkname == "tool"
    # Parents come before children, in sorted order, so the same tree gives the same tar.
    names = list(entries)
    assert names.index("etc") < names.index("etc/opaque") < names.index("etc/opaque/new.conf")
    assert entries["etc/owned"].uname == "" and entries["etc/owned"].gname == ""


def test_same_layer_exports_to_same_digest(scratch: Path, idmap: IdMap) -> None:
    upper = make_upper(scratch / "upper", idmap)
    first = export_layer(upper, Layout(scratch / "a"), scratch / "tmp", idmap=idmap)
    second = export_layer(upper, Layout(scratch / "b"), scratch / "tmp", idmap=idmap)
    assert first == second
    assert (scratch / "a" / "blobs" / "sha256" / first.digest[7:]).read_bytes() == (
        scratch / "b" / "blobs" / "sha256" / second.digest[7:]
    ).read_bytes()


def test_cached_export_is_reused_and_checked(scratch: Path, idmap: IdMap) -> None:
    upper = make_upper(scratch / "upper", idmap)
    layout = Layout(scratch / "oci")
    first = export_layer(upper, layout, scratch / "tmp", idmap=idmap, cache_key="k1")
    # The cache answers without reading the dir: a vanished dir would otherwise fail.
    assert export_layer(scratch / "gone", layout, scratch / "tmp", idmap=idmap,
                        cache_key="k1") == first
    layout.blob_path(first.digest).unlink()
    with pytest.raises(StoreError):
        export_layer(scratch / "gone", layout, scratch / "tmp", idmap=idmap, cache_key="k1")


def test_import_restores_overlay_format(scratch: Path, idmap: IdMap) -> None:
    upper = make_upper(scratch / "upper", idmap)
    layout = Layout(scratch / "oci")
    layer = export_layer(upper, layout, scratch / "tmp", idmap=idmap)
    back = scratch / "back"
    import_layer(layout.blob_path(layer.digest), back, scratch / "tmp", idmap=idmap)

    removed = (back / "etc" / "removed").lstat()
    assert stat.S_ISCHR(removed.st_mode) and removed.st_rdev == 0
    assert not (back / "etc" / ".wh.removed").exists()
    assert os.getxattr(back / "etc" / "opaque", "user.overlay.opaque") == b"y"
    assert os.getxattr(back / "etc" / "opaque", "user.keep") == b"kept"
    assert not (back / "etc" / "opaque" / ".wh..wh..opq").exists()
    assert (back / "usr/bin/tool").stat().st_ino == (back / "usr/bin/tool-alias").stat().st_ino
    assert (back / "usr/bin/tool-link").readlink() == Path("tool")
    # Owners as the namespace sees them: inside 100 is the map's host id for 100.
    assert (back / "etc" / "owned").lstat().st_uid == idmap.host_uid(100)
    # The round trip is exact: exporting the import gives the same blob.
    again = export_layer(back, Layout(scratch / "oci2"), scratch / "tmp", idmap=idmap)
    assert again == layer


def _tar_gz(entries: list[tarfile.TarInfo], tmp: Path) -> Path:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info in entries:
            tar.addfile(info, io.BytesIO(b"x" * info.size) if info.isreg() else None)
    path = tmp / f"evil-{secrets.token_hex(4)}.tar.gz"
    path.write_bytes(gzip.compress(buf.getvalue()))
    return path


def _entry(
    name: str, kind: bytes = tarfile.REGTYPE, link: str = "", size: int = 0
) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    info.size = size
    return info


@pytest.mark.parametrize(
    "entries",
    [
        [_entry("../escaped", size=1)],
        [_entry("a", tarfile.SYMTYPE, link="{outside}"), _entry("a/escaped", size=1)],
        [_entry("hard", tarfile.LNKTYPE, link="../../outside-file")],
    ],
    ids=["dotdot", "through-symlink", "hardlink-out"],
)
def test_import_refuses_paths_leaving_the_layer(
    scratch: Path, idmap: IdMap, tmp_path: Path, entries: list[tarfile.TarInfo]
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    for info in entries:
        info.linkname = info.linkname.replace("{outside}", str(outside))
    blob = _tar_gz(entries, tmp_path)
    with pytest.raises(StoreError, match=r"leaves the layer|non-directory"):
        import_layer(blob, scratch / "dest", scratch / "tmp", idmap=idmap)
    assert list(outside.iterdir()) == []
    assert not (scratch / "escaped").exists()


def test_image_config_and_labels_round_trip() -> None:
    layers = [ExportedLayer("sha256:" + "a" * 64, "sha256:" + "b" * 64, 10),
              ExportedLayer("sha256:" + "c" * 64, "sha256:" + "d" * 64, 20)]
    steps = [StepInfo("1" * 64, "image busybox"), StepInfo("2" * 64, "echo hi")]
    raw = image_config(platform="linux/arm64/v8", build_key="2" * 64, steps=steps, layers=layers)
    config = json.loads(raw)
    assert (config["os"], config["architecture"], config["variant"]) == ("linux", "arm64", "v8")
    assert config["rootfs"] == {"type": "layers", "diff_ids": ["sha256:" + "b" * 64,
                                                                "sha256:" + "d" * 64]}
    assert config["config"]["Labels"][LABEL_BUILD_KEY] == "2" * 64
    assert json.loads(config["config"]["Labels"][LABEL_STEPS])[1]["description"] == "echo hi"
    assert parse_steps_label(config) == ("2" * 64, steps)
    assert raw == image_config(platform="linux/arm64/v8", build_key="2" * 64, steps=steps,
                               layers=layers)
    with pytest.raises(StoreError):
        image_config(platform="linux/amd64", build_key="2" * 64, steps=steps, layers=layers[:1])


def test_push_target_tags() -> None:
    repo, tag = push_target("127.0.0.1:5000/coop/ci")
    assert (repo.registry, repo.repository, tag) == ("127.0.0.1:5000", "coop/ci", None)
    repo, tag = push_target("127.0.0.1:5000/coop/ci:main")
    assert (repo.repository, tag) == ("coop/ci", "main")
    with pytest.raises(Exception, match="digest"):
        push_target("127.0.0.1:5000/coop/ci@sha256:" + "0" * 64)


def _run(argv: list[str]) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, f"{argv[0]} failed: {result.stderr}"
    return result.stdout


# -- real builds through the bench registry ---------------------------------------------


def _coopfile(workspace: Path, image: str, setup: list[str], prebuilt: str | None = None) -> Path:
    workspace.mkdir(parents=True, exist_ok=True)
    lines = [f"[base]\nimage = {json.dumps(image)}\n",
             f"[setup]\nrun = {json.dumps(setup)}\n",
             '[agent]\ncommand = "sh"\n']
    if prebuilt is not None:
        lines.append(f"[build]\nprebuilt = {json.dumps(prebuilt)}\n")
    path = workspace / "coop.toml"
    path.write_text("".join(lines))
    return path


def _build(home: Path, coopfile: Path, **options: Any) -> Any:
    from coop_build.build import Builder, BuildOptions
    from coop_build.layers import load_coopfile
    from coop_build.paths import CoopPaths

    env = {**os.environ, "COOP_HOME": str(home)}
    loaded = load_coopfile(coopfile, workspace=coopfile.parent,
                           global_path=home / "no-global.toml", environ=env)
    builder = Builder(CoopPaths(home), environ=env)
    return builder, builder.build(loaded, coopfile.parent, BuildOptions(**options))


def _remove_home(home: Path) -> None:
    remove_tree(home, choose_idmap())


@pytest.fixture
def homes(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """Two COOP_HOMEs: the CI machine's and a developer's (layers may hold sub-id files)."""
    a, b = tmp_path / "ci-home", tmp_path / "dev-home"
    yield a, b
    for home in (a, b):
        _remove_home(home)


@pytest.mark.registry
@pytest.mark.slow
def test_push_then_fetch_prebuilt_on_another_home(
    registry: Any, test_images: Any, homes: tuple[Path, Path], tmp_path: Path
) -> None:
    ci_home, dev_home = homes
    repo = f"{registry.host}/coop/prebuilt-{secrets.token_hex(4)}"
    setup = ["mkdir -p /opt/ci && echo built-in-ci > /opt/ci/marker && rm /etc/coop-test-image"]
    ci_file = _coopfile(tmp_path / "ci-ws", test_images.busybox, setup)

    _, ci = _build(ci_home, ci_file, push=f"{repo}:main")
    assert ci.steps_run == 2 and not ci.from_prebuilt
    assert ci.pushed == f"{repo}:{ci.build_key}@{ci.pushed.rsplit('@', 1)[1]}"

    # skopeo reads what we pushed by the build key and by REF's own tag: same manifest.
    raw = json.loads(_run(["skopeo", "inspect", "--raw", "--tls-verify=false",
                           f"docker://{repo}:{ci.build_key}"]))
    assert raw["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert len(raw["layers"]) == 2
    info = json.loads(_run(["skopeo", "inspect", "--tls-verify=false", f"docker://{repo}:main"]))
    assert info["Digest"] == ci.pushed.rsplit("@", 1)[1]
    assert info["Labels"][LABEL_BUILD_KEY] == ci.build_key
    steps = json.loads(info["Labels"][LABEL_STEPS])
    assert [s["key"] for s in steps] == [s.key for s in ci.record.steps]

    # An unchanged build pushes again quickly: same digest, layers from the export cache.
    ci_builder, again = _build(ci_home, ci_file, push=repo)
    assert again.steps_run == 0 and again.pushed == ci.pushed
    cache = Layout(ci_home / "cache" / "oci")
    for layer_id in again.record.layers:
        assert cache.annotation(f"dev.coop.exported/{layer_id}") is not None
    assert not any(ci_builder.paths.tmp.glob("step-*"))  # export scratch dirs are gone

    # Another machine, the same Coopfile plus [build] prebuilt: nothing is built.
    dev_file = _coopfile(tmp_path / "dev-ws", test_images.busybox, setup, prebuilt=repo)
    builder, dev = _build(dev_home, dev_file)
    assert dev.from_prebuilt and dev.steps_run == 0
    assert dev.build_key == ci.build_key
    top = builder.store.layers_of(dev.record)[-1].fs
    assert (top / "opt" / "ci" / "marker").read_text() == "built-in-ci\n"
    gone = (top / "etc" / "coop-test-image").lstat()
    assert stat.S_ISCHR(gone.st_mode) and gone.st_rdev == 0  # the deletion survived
    base = builder.store.layers_of(dev.record)[0].fs
    assert (base / "bin" / "busybox").is_file()

    # A changed Coopfile has no prebuilt: it builds, reusing the imported base layer.
    changed = _coopfile(tmp_path / "dev-ws", test_images.busybox, [*setup, "echo more"],
                        prebuilt=repo)
    _, local = _build(dev_home, changed)
    assert not local.from_prebuilt and local.steps_run == 1 and local.steps_total == 3


@pytest.mark.registry
@pytest.mark.slow
def test_umoci_unpacks_what_we_pushed(
    registry: Any, test_images: Any, homes: tuple[Path, Path], tmp_path: Path
) -> None:
    """An independent reader of OCI layers applies our whiteouts and finds our files."""
    ci_home, _ = homes
    repo = f"{registry.host}/coop/umoci-{secrets.token_hex(4)}"
    setup = ["echo hello > /hello && rm /data/keep.txt"
             " && rm -rf /opaque && mkdir /opaque && echo n > /opaque/fresh"]
    _, ci = _build(ci_home, _coopfile(tmp_path / "ws", test_images.layered, setup), push=repo)
    oci = tmp_path / "copy"
    _run(["skopeo", "copy", "--src-tls-verify=false", f"docker://{repo}:{ci.build_key}",
          f"oci:{oci}:img"])
    bundle = tmp_path / "bundle"
    _run(["umoci", "unpack", "--rootless", "--image", f"{oci}:img", str(bundle)])
    rootfs = bundle / "rootfs"
    assert (rootfs / "hello").read_text() == "hello\n"
    assert not (rootfs / "data" / "keep.txt").exists()
    assert sorted(p.name for p in (rootfs / "opaque").iterdir()) == ["fresh"]
    assert (rootfs / "etc" / "coop-test-image").read_text() == "layered\n"
    assert not any(p.name.startswith(".wh.") for p in rootfs.rglob("*"))


@pytest.mark.registry
def test_fetch_prebuilt_without_tag_is_none(
    registry: Any, test_images: Any, tmp_path: Path
) -> None:
    from coop_build.build import Builder
    from coop_build.export import fetch_prebuilt
    from coop_build.layers import load_coopfile
    from coop_build.paths import CoopPaths

    home = tmp_path / "home"
    coopfile = _coopfile(tmp_path / "ws", test_images.busybox, ["true"])
    env = {**os.environ, "COOP_HOME": str(home)}
    loaded = load_coopfile(coopfile, workspace=coopfile.parent,
                           global_path=home / "none.toml", environ=env)
    builder = Builder(CoopPaths(home), environ=env)
    plan = builder.plan(loaded)
    repo = f"{registry.host}/coop/never-pushed-{secrets.token_hex(4)}"
    assert fetch_prebuilt(builder.paths, builder.store, repo, plan) is None
    assert builder.store.get_build(plan.build_key) is None


def test_unreachable_prebuilt_registry_falls_back_to_building(tmp_path: Path) -> None:
    from coop_build.build import Builder
    from coop_build.export import fetch_prebuilt
    from coop_build.layers import load_coopfile
    from coop_build.paths import CoopPaths

    home = tmp_path / "home"
    coopfile = _coopfile(tmp_path / "ws", "127.0.0.1:1/library/busybox:1", ["true"])
    env = {**os.environ, "COOP_HOME": str(home)}
    loaded = load_coopfile(coopfile, workspace=coopfile.parent,
                           global_path=home / "none.toml", environ=env)
    builder = Builder(CoopPaths(home), environ=env)
    plan = builder.plan(loaded)
    with socket.socket() as sock:  # a port nobody listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    repo = f"127.0.0.1:{port}/coop/nobody-listens"
    assert fetch_prebuilt(builder.paths, builder.store, repo, plan) is None
