"""Helpers to run the real ``coop`` console script with a test's isolated environment,
and to stop everything those runs started."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from coop_build.idmap import choose_idmap
from coop_build.namespace import remove_tree
from support.procs import pid_alive, processes_with_env, stop_pid, with_descendants

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


def coop_init(coop_env: Any, workspace: Path, environ: Mapping[str, str]) -> Result:
    """``coop init`` in ``workspace`` with the test's environment plus ``environ`` (a
    mirror's or a user's trust settings)."""
    proc = subprocess.run([str(COOP), "init"], cwd=workspace,
                          env={**coop_environ(coop_env), **environ}, capture_output=True,
                          text=True, timeout=RUN_TIMEOUT, stdin=subprocess.DEVNULL, check=False)
    return Result(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture
def remove_the_store(coop_env: Any) -> Iterator[None]:
    """For tests whose steps chown (apt, dpkg): what they built belongs to the user's
    sub-ids, which only a namespace of theirs may remove; left behind, it breaks pytest's
    own clean-up of old temporary directories (and any later run's). Import it into the
    module and mark its tests ``usefixtures("remove_the_store")``. Sessions on it are
    stopped first."""
    yield
    stop_started(coop_env.coop_home)
    if coop_env.coop_home.exists():
        remove_tree(coop_env.coop_home, choose_idmap())


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


def read_pid(coop_home: Path) -> int | None:
    """The daemon's pid file, if it holds a number."""
    try:
        return int((coop_home / "daemon.pid").read_text().strip())
    except (OSError, ValueError):
        return None


def coop_pids(coop_home: Path) -> list[int]:
    """Live processes started with this ``COOP_HOME``: daemons, their session starters
    (zygote, spare, the spare's waiting init, which has no marker) and sessions."""
    return with_descendants([p.pid for p in processes_with_env("COOP_HOME", str(coop_home))
                             if p.alive])


def stop_started(coop_home: Path, timeout: float = 10.0) -> None:
    """Stop by pid what the test's ``coop`` runs started (and only that): supervisors
    first (named by their state records), then the rest, the daemon last."""
    started = set(coop_pids(coop_home))
    supervisors: set[int] = set()
    for state in coop_home.glob("sessions/*/supervisor.json"):
        try:
            pid = json.loads(state.read_text()).get("pid")
        except (OSError, ValueError):
            continue
        if isinstance(pid, int) and pid in started:  # a record may name anyone
            supervisors.add(pid)
    daemon = read_pid(coop_home)
    daemons = {daemon} if daemon in started else set()
    for pid in sorted(supervisors) + sorted(started - supervisors - daemons) + sorted(daemons):
        if pid_alive(pid):
            stop_pid(pid, timeout=timeout)


def complete(env: dict[str, str], instruction: str, words: str, cword: str) -> list[str]:
    """The real ``coop``'s answer to a shell-completion request (click's protocol:
    ``_COOP_COMPLETE=bash_complete`` with ``COMP_WORDS``/``COMP_CWORD``), one per line."""
    proc = subprocess.run([str(COOP)], capture_output=True, text=True, timeout=RUN_TIMEOUT,
                          check=False, stdin=subprocess.DEVNULL,
                          env={**env, "_COOP_COMPLETE": instruction, "COMP_WORDS": words,
                               "COMP_CWORD": cword})
    assert (proc.returncode, proc.stderr) == (0, ""), proc
    return [line for line in proc.stdout.splitlines() if line]  # nothing: one empty line
