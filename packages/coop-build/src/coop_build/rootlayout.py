"""What every root coop makes holds, for builds (``_nsexec``) and sessions (``coop_run``)
alike: the default ``PATH``, the host directories an ``image = "host"`` root shares, and
the minimal ``/dev``."""

from __future__ import annotations

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
HOST_DIRS = ("usr", "bin", "sbin", "lib", "lib64", "lib32", "libx32", "etc")
DEV_NODES = ("null", "zero", "full", "random", "urandom", "tty")  # bound from the host
DEV_LINKS = (                                                     # symlinks in /dev
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
    ("ptmx", "pts/ptmx"),
)
