"""Helpers to run the real ``coop`` console script with a test's isolated environment."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

COOP = Path(sys.executable).with_name("coop")
RUN_TIMEOUT = 240.0


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str

    def __str__(self) -> str:  # shown by pytest when an assertion on a Result fails
        return f"exit {self.returncode}\n--- stdout\n{self.stdout}--- stderr\n{self.stderr}"


def coop_environ(coop_env: Any) -> dict[str, str]:
    """The environment of a ``coop`` run: the test's own HOME, COOP_HOME and config dir."""
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env.update(
        HOME=str(coop_env.home),
        COOP_HOME=str(coop_env.coop_home),
        XDG_CONFIG_HOME=str(coop_env.config_home),
        TERM="dumb",
    )
    return env


RunCoop = Callable[..., Result]


def write_coopfile(workspace: Path, image: str, setup: list[str] | None = None) -> Path:
    """A minimal Coopfile on ``image`` with the given setup commands."""
    lines = ["[base]", f'image = "{image}"', "", "[agent]", 'command = "/bin/sh"', ""]
    if setup is not None:
        quoted = ", ".join('"' + cmd.replace("\\", "\\\\").replace('"', '\\"') + '"'
                           for cmd in setup)
        lines += ["[setup]", f"run = [{quoted}]", ""]
    path = workspace / "coop.toml"
    path.write_text("\n".join(lines))
    return path
