"""What every root coop makes holds, for builds (``_nsexec``) and sessions (``coop_run``)
alike: the default ``PATH``, the host directories an ``image = "host"`` root has as its
lowest layer (``hostlayer``; and the secrets among them it never shows), what else its
base layer holds, and the minimal ``/dev``."""

# os and str paths: this runs on every session start (pathlib's glob alone took 0.1 ms).
# ruff: noqa: PTH116, PTH118, PTH208

from __future__ import annotations

import fnmatch
import os
import stat

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
HOST_DIRS = ("usr", "bin", "sbin", "lib", "lib64", "lib32", "libx32", "etc")
# The package database, so that dpkg knows what the host has (nothing secret in it;
# debconf's answers, which may hold passwords, are in /var/cache/debconf and stay out).
HOST_STATE_DIRS = ("var/lib/dpkg",)
# Files of those a build step gets a copy of its own (dropped after the step when
# unchanged): dpkg hard-links its status to status-old before it writes a new one, and
# no sandbox may hard-link a file of host root's (fs.protected_hardlinks).
HOST_STEP_COPIES = ("var/lib/dpkg/status",)
# What else a host image's base layer holds (path, mode): mount points, and the
# directories apt and dpkg need that are not the host's (apt's lists and downloads).
HOST_BASE_DIRS = (
    ("proc", 0o755), ("dev", 0o755), ("tmp", 0o1777), ("root", 0o700),
    ("workspace", 0o755), ("var", 0o755), ("var/tmp", 0o1777), ("var/log", 0o755),
    ("var/lib", 0o755), ("var/lib/apt", 0o755), ("var/lib/apt/lists", 0o755),
    ("var/lib/apt/lists/partial", 0o700), ("var/cache", 0o755), ("var/cache/apt", 0o755),
    ("var/cache/apt/archives", 0o755), ("var/cache/apt/archives/partial", 0o700),
    ("var/cache/ldconfig", 0o700),
)
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
