"""The test sessions' configuration, the fixtures that start them (``conftest`` hands them
to pytest), and stopping a supervisor by PID (the socket client is ``supervisor_client``)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from busybox_sandbox import busybox_config, home_workspace
from supervisor_client import request

from coop_run.session.config import SupervisorConfig
from coop_run.session.launch import SupervisorHandle
from coop_run.session.process import start_supervisor
from coop_run.statefiles import read_json
from support.bench import CoopEnv
from support.procs import pid_alive, stop_pid, wait_for

Start = Callable[..., SupervisorHandle]


def supervisor_config(env: CoopEnv, layer: Path, workspace: Path, name: str = "proj",
                      agent: tuple[str, ...] = ("sh",), **changes: Any) -> SupervisorConfig:
    """A busybox session with a quick restart and a short grace, logging to COOP_HOME."""
    sandbox = busybox_config(env, layer, workspace, name, env={"PS1": "$ "})
    base: dict[str, Any] = {"sandbox": sandbox, "agent": agent, "restart_delay_ms": 50,
                            "stop_grace": 1.0,
                            "log_file": env.coop_home / "logs" / f"{name}.log"}
    base.update(changes)
    return SupervisorConfig(**base)


def stop_supervisor(handle: SupervisorHandle) -> None:
    """The kill command, then by PID (supervisor.json's and the handle's)."""
    with contextlib.suppress(OSError, AssertionError):
        request(handle.socket_path, {"cmd": "kill", "force": True})
    pids = {handle.pid}
    state = read_json(handle.state_path)
    if state is not None and isinstance(state.get("pid"), int):
        pids.add(state["pid"])
    for pid in pids:
        with contextlib.suppress(AssertionError):
            wait_for(lambda pid=pid: not pid_alive(pid), 5.0, f"supervisor {pid} to exit")
        stop_pid(pid, timeout=5.0)


@pytest.fixture
def make_config(coop_env: CoopEnv, busybox_layer: Path) -> Callable[..., SupervisorConfig]:
    """Configurations of busybox sessions, all on the one workspace ``~/proj``."""
    workspace = home_workspace(coop_env)

    def make(name: str = "proj", agent: tuple[str, ...] = ("sh",),
             **changes: Any) -> SupervisorConfig:
        return supervisor_config(coop_env, busybox_layer, workspace, name, agent, **changes)

    return make


@pytest.fixture
def start(make_config: Callable[..., SupervisorConfig]) -> Iterator[Start]:
    """Start supervisors of those configurations; each is stopped at the end by PID."""
    handles: list[SupervisorHandle] = []

    def go(name: str = "proj", **changes: Any) -> SupervisorHandle:
        handle = start_supervisor(make_config(name, **changes))
        handles.append(handle)
        return handle

    yield go
    for handle in handles:
        stop_supervisor(handle)
