"""State shared by every command: global options, environment, and the terminal.

The CLI owns the terminal; commands write through these helpers so ``-q`` and ``-v``
mean the same thing everywhere.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TextIO

from coop_build.paths import CoopPaths, coop_home, global_config_path
from coop_run.layout import RunLayout


class App:
    """Global options (seed 11.6) and the I/O every command uses.

    A plain class rather than a dataclass: ``dataclasses`` imports ``inspect``, which
    ``coop ls`` (click-free, see ``coop_run.cli.fast``) would otherwise load on every run.
    """

    def __init__(
        self,
        *,
        config: Path | None = None,
        socket: Path | None = None,
        verbose: bool = False,
        quiet: bool = False,
        environ: Mapping[str, str] | None = None,
        out: TextIO | None = None,
        err: TextIO | None = None,
    ) -> None:
        self.config = config
        self.socket = socket
        self.verbose = verbose
        self.quiet = quiet
        self.environ: Mapping[str, str] = dict(os.environ) if environ is None else environ
        self.out: TextIO = sys.stdout if out is None else out
        self.err: TextIO = sys.stderr if err is None else err
        self.workspace_dir: Path | None = None  # ``-w`` of a command that takes it

    @property
    def paths(self) -> CoopPaths:
        return CoopPaths(coop_home(dict(self.environ)))

    @property
    def layout(self) -> RunLayout:
        """The runtime's files under ``COOP_HOME``: the daemon's socket, pid file, log."""
        return RunLayout(self.paths)

    @property
    def global_config(self) -> Path:
        """``--config`` if given, else ``$XDG_CONFIG_HOME/coop/default.toml``."""
        return self.config if self.config is not None else global_config_path(dict(self.environ))

    @property
    def socket_path(self) -> Path:
        """``--socket`` if given, else ``$COOP_HOME/sock``."""
        return self.socket if self.socket is not None else self.layout.socket

    @property
    def workspace(self) -> Path:
        """``-w`` if given, else where coop was invoked: the default workspace (SPEC 2,
        ``workspace.mount``)."""
        return (self.workspace_dir if self.workspace_dir is not None else Path.cwd()).resolve()

    def echo(self, text: str) -> None:
        """Non-essential output: silenced by ``-q``."""
        if not self.quiet:
            print(text, file=self.out, flush=True)

    def warn(self, text: str) -> None:
        """A warning on stderr: silenced by ``-q`` like all non-error output."""
        if not self.quiet:
            print(f"warning: {text}", file=self.err, flush=True)

    def error(self, text: str) -> None:
        """An error line on stderr: never silenced."""
        print(text, file=self.err, flush=True)

    @property
    def tty(self) -> bool:
        """Whether stdout is a terminal (updating progress lines) and not a dumb one."""
        return self.out.isatty() and self.environ.get("TERM", "") not in ("", "dumb")
