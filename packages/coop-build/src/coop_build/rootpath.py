"""Paths inside a root directory that is not ``/`` yet (before ``pivot_root``).

Mount targets named by a Coopfile or an image (``/etc/resolv.conf``, ``/workspace``) must
be resolved as the process inside will see them: a symlink in the image that points to
``/run/...`` means ``<root>/run/...``, never the host's ``/run``. The build runner resolves
its mount points with this; the session sandbox's init (coop_run's ``csrc/coop-init.c``)
has the same rules in C.
"""

# Plain string paths: this runs in namespace setup, before pivot_root.
# ruff: noqa: PTH115, PTH114, PTH118

from __future__ import annotations

import errno
import os
from collections import deque

_MAX_HOPS = 40  # as the kernel's ELOOP limit


def resolve_in_root(root: str, path: str) -> str:
    """``path`` with every symlink followed *within* ``root``, as a path relative to it.

    Absolute links restart at ``root``, ``..`` stops at it, missing components are kept
    as they are (they are about to be created). Raises ``OSError(ELOOP)`` on a loop.
    """
    parts = deque(path.split("/"))
    cur: list[str] = []
    hops = 0
    while parts:
        part = parts.popleft()
        if part in ("", "."):
            continue
        if part == "..":
            if cur:
                cur.pop()
            continue
        candidate = os.path.join(root, *cur, part)
        if os.path.islink(candidate):
            hops += 1
            if hops > _MAX_HOPS:
                shown = "/" + path.lstrip("/")
                raise OSError(errno.ELOOP, f"too many symlinks resolving {shown} in {root}")
            link = os.readlink(candidate)
            if link.startswith("/"):
                cur = []
            parts.extendleft(reversed(link.split("/")))
            continue
        cur.append(part)
    return "/".join(cur)
