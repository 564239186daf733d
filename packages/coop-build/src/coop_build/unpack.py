"""A pulled image (a tag in the OCI layout cache) -> a plain directory, via umoci.

``umoci raw unpack --rootless`` applies the layers with whiteouts, opaque dirs, hardlinks
and symlinks handled and never writes outside the target; files all become the invoking
user's (inside the build namespace they are root's). It is about three times faster than
``umoci unpack`` because it skips the bundle's mtree manifest, which we never use.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

from coop_build.errors import StoreError
from coop_build.namespace import force_rmtree
from coop_build.umoci import run_umoci

logger = logging.getLogger(__name__)


def unpack_image(layout_root: Path, tag: str, dest: Path) -> None:
    """Unpack ``layout_root:tag`` to ``dest`` (which must not exist), atomically.

    The work happens in a temporary directory beside ``dest`` and is renamed into place
    only when umoci succeeded, so ``dest`` is either complete or absent.
    """
    if dest.exists() or dest.is_symlink():
        raise StoreError(f"unpack target already exists: {dest}")
    if not (layout_root / "index.json").is_file():
        raise StoreError(f"not an OCI image layout: {layout_root}")
    if not tag or ":" in tag or "/" in tag:
        raise StoreError(f"invalid tag for the image layout: {tag!r}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{dest.name}.unpack-", dir=dest.parent))
    try:
        rootfs = scratch / "rootfs"
        started = time.monotonic()
        run_umoci(["raw", "unpack", "--rootless", "--image", f"{layout_root}:{tag}", rootfs])
        rootfs.rename(dest)
        logger.info("unpacked %s:%s in %.2fs", layout_root, tag, time.monotonic() - started)
    finally:
        force_rmtree(scratch)
