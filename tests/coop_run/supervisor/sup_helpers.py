"""The test sessions' configuration, and stopping a supervisor by PID (the socket client
is ``supervisor_client``)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from busybox_sandbox import busybox_config
from supervisor_client import request

from coop_run.session.config import SupervisorConfig
from coop_run.session.launch import SupervisorHandle
from coop_run.statefiles import read_json
from support.bench import CoopEnv
from support.procs import pid_alive, stop_pid, wait_for


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
