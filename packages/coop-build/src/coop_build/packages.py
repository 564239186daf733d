"""Shell command lines that install packages with each supported package manager.

Pure code: the build runs the returned string with ``/bin/sh -c`` inside the rootfs.
Every package name is quoted with ``shlex`` so a Coopfile entry can never inject shell
syntax, and names that look like options are refused so they cannot change the command.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence

from coop_build.coopfile import KNOWN_MANAGERS
from coop_build.errors import CoopfileError

__all__ = ["KNOWN_MANAGERS", "install_command"]

# apt's sandbox user (_apt) cannot be switched to when only one id is mapped.
_APT_SINGLE_IDMAP = "-o APT::Sandbox::User=root"


def _names(manager: str, packages: Sequence[str]) -> str:
    if not packages:
        raise CoopfileError(f"[packages].{manager}: no packages to install")
    for name in packages:
        if not name or name.startswith("-"):
            raise CoopfileError(f'[packages].{manager}: "{name}" is not a package name')
    return " ".join(shlex.quote(name) for name in packages)


def install_command(manager: str, packages: Sequence[str], *, single_idmap: bool) -> str:
    """The non-interactive install command for ``packages`` with ``manager``.

    ``single_idmap`` tells whether the build namespace maps only the invoking user: apt
    then has to run its download sandbox as root.
    """
    names = _names(manager, packages)
    if manager == "apk":
        return f"apk add --no-cache {names}"
    if manager == "apt":
        opts = f" {_APT_SINGLE_IDMAP}" if single_idmap else ""
        return (
            f"apt-get{opts} update"
            f" && DEBIAN_FRONTEND=noninteractive apt-get{opts} install -y"
            f" --no-install-recommends {names}"
            " && rm -rf /var/lib/apt/lists/*"
        )
    if manager == "dnf":
        return f"dnf install -y {names}"
    if manager == "pacman":
        return f"pacman -Sy --noconfirm {names}"
    if manager == "pip":
        # The env var spelling of --root-user-action is ignored by pips too old to know it.
        pip_env = "PIP_BREAK_SYSTEM_PACKAGES=1 PIP_ROOT_USER_ACTION=ignore"
        args = f"install --no-cache-dir {names}"
        return (
            f"if command -v python3 >/dev/null 2>&1;"
            f" then {pip_env} python3 -m pip {args};"
            f" else {pip_env} pip {args}; fi"
        )
    if manager == "npm":
        return f"npm install -g --no-audit --no-fund {names}"
    raise CoopfileError(
        f"[packages]: unknown package manager {manager!r} (known: {', '.join(KNOWN_MANAGERS)})"
    )
