"""Where coop keeps things: ``$COOP_HOME`` (default ``~/.coop``) and the global config."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path


def coop_home(environ: dict[str, str] | None = None) -> Path:
    """The coop state directory: ``$COOP_HOME`` or ``~/.coop``."""
    env = os.environ if environ is None else environ
    value = env.get("COOP_HOME")
    if value:
        return Path(value)
    return Path(env.get("HOME") or Path.home()) / ".coop"


def global_config_path(environ: dict[str, str] | None = None) -> Path:
    """The global Coopfile layer: ``$XDG_CONFIG_HOME/coop/default.toml``."""
    env = os.environ if environ is None else environ
    xdg = env.get("XDG_CONFIG_HOME")
    base = Path(xdg) if xdg else Path(env.get("HOME") or Path.home()) / ".config"
    return base / "coop" / "default.toml"


def display_path(path: Path | str, environ: Mapping[str, str] | None = None, *,
                 cwd: Path | None = None) -> str:
    """``path`` as a user would type it back: ``./x`` under the working directory, ``~/x``
    under ``$HOME``, else absolute.

    ``cwd`` defaults to the process's own; a working directory of ``/`` (the daemon's)
    shortens nothing, since every path lies below it. A path whose real path lies under
    ``cwd`` or ``$HOME`` (through a symlink) is shown that way too.
    """
    env = os.environ if environ is None else environ
    if cwd is None:
        try:
            cwd = Path.cwd()
        except OSError:  # the working directory was removed: nothing is below it
            cwd = Path("/")
    absolute = Path(os.path.normpath(cwd / path))
    spellings = (absolute, Path(os.path.realpath(absolute)))
    home = env.get("HOME") or "/"
    roots = [(cwd, "."), (Path(os.path.normpath(home)), "~"), (Path(os.path.realpath(home)), "~")]
    for root, shown in roots:
        if root == Path("/"):
            continue
        for spelling in spellings:
            if spelling.is_relative_to(root):
                relative = spelling.relative_to(root)
                return shown if relative == Path() else f"{shown}/{relative}"
    return str(absolute)


class CoopPaths:
    """The layout of one ``COOP_HOME`` (SPEC 11), computed, never created implicitly."""

    def __init__(self, home: Path) -> None:
        self.home = home

    @property
    def cache_oci(self) -> Path:
        """OCI image layout: content-addressed blobs shared by every pull."""
        return self.home / "cache" / "oci"

    @property
    def layers(self) -> Path:
        """One directory per build step, named by the step key (overlay lower layers)."""
        return self.home / "layers"

    @property
    def rootfs(self) -> Path:
        """One directory per build key: the record of a built environment."""
        return self.home / "rootfs"

    @property
    def workspaces(self) -> Path:
        """Which build key each workspace last built (one small JSON file each)."""
        return self.home / "workspaces"

    @property
    def logs(self) -> Path:
        return self.home / "logs"

    @property
    def build_logs(self) -> Path:
        return self.home / "logs" / "build"

    @property
    def sessions(self) -> Path:
        return self.home / "sessions"

    @property
    def tmp(self) -> Path:
        """Scratch space on the same filesystem as the store, for atomic renames."""
        return self.home / "tmp"
