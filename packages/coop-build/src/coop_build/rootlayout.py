"""What every root coop makes holds, for builds (``_nsexec``) and sessions (``coop_run``)
alike: the default ``PATH``, the host directories an ``image = "host"`` root shares (and
the secrets among them it never shows), and the minimal ``/dev``."""

# os and str paths: this runs on every session start (pathlib's glob alone took 0.1 ms).
# ruff: noqa: PTH116, PTH118, PTH208

from __future__ import annotations

import fnmatch
import os
import stat

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
HOST_DIRS = ("usr", "bin", "sbin", "lib", "lib64", "lib32", "libx32", "etc")
# Under HOST_DIRS but never visible (whoever runs coop): an empty read-only file is bound
# over each file, an empty read-only tmpfs over each directory. Glob patterns, relative.
HOST_SECRETS = (
    "etc/shadow", "etc/shadow-", "etc/gshadow", "etc/gshadow-",
    "etc/sudoers", "etc/sudoers.d",
    "etc/ssh/ssh_host_*_key",   # the private keys; the .pub files stay
)
DEV_NODES = ("null", "zero", "full", "random", "urandom", "tty")  # bound from the host
DEV_LINKS = (                                                     # symlinks in /dev
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
    ("ptmx", "pts/ptmx"),
)


def host_secrets(host_root: str = "/") -> list[tuple[str, bool]]:
    """The ``HOST_SECRETS`` present on the host: (path relative to its /, is a directory),
    in a fixed order. (On a session's start path: a few ``lstat`` calls, no globbing.)"""
    found: list[tuple[str, bool]] = []
    for pattern in HOST_SECRETS:
        parent, _, name = pattern.rpartition("/")
        if "*" in name:
            try:
                names = sorted(n for n in os.listdir(os.path.join(host_root, parent))
                               if fnmatch.fnmatchcase(n, name))
            except OSError:
                continue
        else:
            names = [name]
        for entry in names:
            rel = f"{parent}/{entry}"
            try:
                st = os.stat(os.path.join(host_root, rel))
            except OSError:
                continue
            found.append((rel, stat.S_ISDIR(st.st_mode)))
    return found
