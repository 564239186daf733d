"""The bench's small test images: built with tarfile into an OCI layout, pushed by skopeo.

skopeo is the independent oracle here: nothing of coop_build is used to make fixtures.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .oci import Layer, Layout, TarBuilder
from .servers import clean_env

BUSYBOX = Path("/bin/busybox")
# Applets every test may rely on, whatever `busybox --list` says.
REQUIRED_APPLETS = ("sh", "ls", "cat", "echo", "id", "mkdir", "rm", "touch", "test", "true",
                    "false", "env", "sleep", "tty")
PASSWD = ("root:x:0:0:root:/root:/bin/sh\n"
          "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
GROUP = "root:x:0:\nnogroup:x:65534:\n"
MANIFEST_ACCEPT = ", ".join([
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
])


class ImageBuildError(Exception):
    """Building or pushing a fixture image failed."""


def run_tool(argv: list[str], timeout: float = 120.0) -> str:
    """Runs skopeo & co without proxies; the tool's stderr is in the error."""
    proc = subprocess.run(argv, capture_output=True, text=True, env=clean_env(),
                          timeout=timeout, check=False)
    if proc.returncode != 0:
        raise ImageBuildError(f"{' '.join(argv[:3])} failed: {proc.stderr.strip()}")
    return proc.stdout


def busybox_applets() -> list[str]:
    """Where to link every applet of the host busybox: its own path and /bin/NAME."""
    out = run_tool([str(BUSYBOX), "--list-full"])
    paths = {line.strip().strip("/") for line in out.splitlines() if line.strip()}
    # Also every applet under /bin, so /bin/id and /usr/bin/id both work.
    paths.update(f"bin/{p.rsplit('/', 1)[-1]}" for p in list(paths))
    paths.update(f"bin/{name}" for name in REQUIRED_APPLETS)
    paths.discard("bin/busybox")
    return sorted(paths)


def add_busybox_base(tar: TarBuilder, marker: str) -> None:
    """The busybox root filesystem; /etc/coop-test-image holds ``marker``."""
    for d in ("bin", "sbin", "usr", "usr/bin", "usr/sbin", "etc", "proc", "dev", "home", "var",
              "var/tmp", "workspace", "sys", "run"):
        tar.dir(d)
    tar.dir("tmp", 0o1777)
    tar.dir("root", 0o700)
    tar.file("bin/busybox", BUSYBOX.read_bytes(), 0o755)
    for path in busybox_applets():
        tar.symlink(path, "/bin/busybox")
    tar.file("etc/passwd", PASSWD.encode())
    tar.file("etc/group", GROUP.encode())
    tar.file("etc/coop-test-image", f"{marker}\n".encode())


@dataclass(frozen=True)
class TestImages:
    """Full references (``127.0.0.1:PORT/library/NAME:1``) of the pushed test images."""

    __test__ = False  # not a test class, whatever pytest thinks of the name

    busybox: str
    layered: str
    layered_v2s2: str
    multiarch: str
    zstd: str
    layout: Path
    digests: dict[str, str] = field(default_factory=dict)


def _layered_layers(layout: Layout) -> tuple[Layer, Layer]:
    base = TarBuilder()
    add_busybox_base(base, "busybox")
    base.file("data/keep.txt", b"keep\n")
    base.file("data/remove-me.txt", b"bye\n")
    base.file("opaque/old1.txt", b"old1\n")
    base.file("opaque/sub/old2.txt", b"old2\n")
    top = TarBuilder()
    top.file("data/.wh.remove-me.txt", b"")
    top.file("opaque/.wh..wh..opq", b"")
    top.file("opaque/new.txt", b"new\n")
    top.file("hl/a.txt", b"hardlinked\n")
    top.hardlink("hl/b.txt", "hl/a.txt")
    top.symlink("links/rel", "../data/keep.txt")
    top.symlink("links/abs", "/data/keep.txt")
    top.file("etc/coop-test-image", b"layered\n")
    return layout.add_layer(base.getvalue()), layout.add_layer(top.getvalue())


def write_layout(root: Path) -> Layout:
    """Writes every fixture image into one OCI layout, tagged by fixture name."""
    layout = Layout(root)

    tar = TarBuilder()
    add_busybox_base(tar, "busybox")
    busybox_layer = layout.add_layer(tar.getvalue())
    layout.tag("busybox", layout.add_image([busybox_layer]))

    layout.tag("layered", layout.add_image(_layered_layers(layout)))

    amd64_extra = TarBuilder()
    amd64_extra.file("etc/coop-test-arch", b"amd64\n")
    amd64_extra.file("etc/coop-test-image", b"multiarch\n")
    amd64 = layout.add_image([busybox_layer, layout.add_layer(amd64_extra.getvalue())])
    arm = TarBuilder()
    for d in ("bin", "etc", "tmp", "proc", "dev", "root"):
        arm.dir(d)
    arm.file("bin/sh", b"#!/bin/sh\n# placeholder: arm64 binaries are never run here\n", 0o755)
    arm.file("etc/coop-test-arch", b"arm64\n")
    arm.file("etc/coop-test-image", b"multiarch\n")
    arm64 = layout.add_image([layout.add_layer(arm.getvalue())], arch="arm64", variant="v8")
    layout.tag("multiarch", layout.add_index([amd64, arm64]))
    return layout


def manifest_digest(registry_url: str, repo: str, tag: str) -> str:
    """The digest the registry reports for ``repo:tag`` (Docker-Content-Digest)."""
    req = urllib.request.Request(f"{registry_url}/v2/{repo}/manifests/{tag}", method="HEAD",
                                 headers={"Accept": MANIFEST_ACCEPT})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(req, timeout=10) as resp:
        return str(resp.headers["Docker-Content-Digest"])


def push(layout_dir: Path, tag: str, dest: str, *extra: str) -> None:
    """``skopeo copy`` from the layout to ``docker://dest`` over plain http."""
    run_tool(["skopeo", "copy", "--quiet", "--dest-tls-verify=false", *extra,
              f"oci:{layout_dir}:{tag}", f"docker://{dest}"])


def build_and_push(workdir: Path, host: str, url: str) -> TestImages:
    """Builds the layout under ``workdir`` and pushes every image to the registry."""
    layout_dir = workdir / "layout"
    write_layout(layout_dir)
    refs = {
        "busybox": "library/busybox:1",
        "layered": "library/layered:1",
        "layered_v2s2": "library/layered-v2s2:1",
        "multiarch": "library/multiarch:1",
        "zstd": "library/zstd:1",
    }
    push(layout_dir, "busybox", f"{host}/{refs['busybox']}")
    push(layout_dir, "layered", f"{host}/{refs['layered']}")
    push(layout_dir, "layered", f"{host}/{refs['layered_v2s2']}", "--format", "v2s2")
    push(layout_dir, "multiarch", f"{host}/{refs['multiarch']}", "--all")
    # Compressing while pushing silently keeps gzip (FIELD-NOTES): convert in a layout first.
    zstd_dir = workdir / "zstd-layout"
    shutil.rmtree(zstd_dir, ignore_errors=True)
    run_tool(["skopeo", "copy", "--quiet", "--dest-compress", "--dest-compress-format", "zstd",
              f"oci:{layout_dir}:busybox", f"oci:{zstd_dir}:zstd"])
    push(zstd_dir, "zstd", f"{host}/{refs['zstd']}")
    digests = {}
    for name, ref in refs.items():
        repo, tag = ref.rsplit(":", 1)
        digests[name] = manifest_digest(url, repo, tag)
    full = {name: f"{host}/{ref}" for name, ref in refs.items()}
    return TestImages(layout=layout_dir, digests=digests, **full)


def read_manifest(url: str, repo: str, tag: str) -> tuple[str, dict[str, Any]]:
    """(Content-Type, parsed manifest) as the registry serves ``repo:tag``."""
    req = urllib.request.Request(f"{url}/v2/{repo}/manifests/{tag}",
                                 headers={"Accept": MANIFEST_ACCEPT})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(req, timeout=10) as resp:
        return str(resp.headers["Content-Type"]), json.loads(resp.read())
