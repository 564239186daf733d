"""What every root coop makes holds, for builds (``_nsexec``) and sessions (``coop_run``)
alike: the default ``PATH``, the host directories an ``image = "host"`` root shares (and
the secrets among them it never shows), and the minimal ``/dev``."""

from __future__ import annotations

from pathlib import Path

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
    in a fixed order."""
    top = Path(host_root)
    return [(str(path.relative_to(top)), path.is_dir())
            for pattern in HOST_SECRETS for path in sorted(top.glob(pattern))]
