"""Minimal root filesystems for tests: Debian's static busybox and a few /etc files.

No registry and no network: ``busybox-static`` (tests/support/APT_PACKAGES) provides a
self-contained /bin/busybox whose applets stand in for a distribution's tools.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from coop_build.idmap import choose_idmap
from coop_build.namespace import hand_over_tree

BUSYBOX = Path("/bin/busybox")


def busybox_available() -> bool:
    """Debian's static busybox is installed (the dynamic one would need host libs)."""
    if not BUSYBOX.is_file():
        return False
    out = subprocess.run(["file", "-L", str(BUSYBOX)], capture_output=True, text=True,
                         check=False).stdout if shutil.which("file") else "statically linked"
    return "statically linked" in out or "static-pie" in out


def make_busybox_rootfs(dest: Path, *, resolv_conf: bool = True,
                        hand_over: bool = True) -> Path:
    """Create ``dest`` as a tiny rootfs: /bin/busybox + applet symlinks, passwd, group,
    owned as coop's store would own a layer (as root: by coop's id range, see
    ``coop_build.subids``).

    ``resolv_conf=False`` leaves /etc/resolv.conf absent (the runner must then create a
    mount point for it that does not end up in the step's layer). ``hand_over=False``
    leaves it owned by whoever made it, for a tool that maps only its caller's own id
    (bwrap: coop's range is unmapped in its namespace, so a 0700 directory of the range's
    could not be entered).
    """
    dest.mkdir(parents=True)
    for name in ("bin", "sbin", "usr/bin", "usr/sbin", "etc", "proc", "dev", "tmp", "root"):
        (dest / name).mkdir(parents=True, exist_ok=True)
    (dest / "tmp").chmod(0o1777)
    (dest / "root").chmod(0o700)
    shutil.copy2(BUSYBOX, dest / "bin" / "busybox")
    applets = subprocess.run([str(BUSYBOX), "--list-full"], capture_output=True, text=True,
                             check=True).stdout.split()
    for applet in applets:
        link = dest / applet
        if "/" not in applet or link.exists() or link.is_symlink():  # linuxrc, busybox
            continue
        link.parent.mkdir(parents=True, exist_ok=True)
        depth = len(Path(applet).parts) - 1
        link.symlink_to("../" * depth + "bin/busybox")
    (dest / "etc" / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\n"
        "daemon:x:1:1:daemon:/usr/sbin:/bin/false\n"
        "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
    )
    (dest / "etc" / "group").write_text("root:x:0:\ndaemon:x:1:\nnogroup:x:65534:\n")
    if resolv_conf:
        (dest / "etc" / "resolv.conf").write_text("# replaced by the runner\n")
    return as_layer(dest) if hand_over else dest


def as_layer(tree: Path) -> Path:
    """``tree`` owned as coop's store owns a layer: as root, by coop's id range (files
    made as root become its inside root's), so a sandbox's root may change them."""
    hand_over_tree(tree, choose_idmap())
    return tree
