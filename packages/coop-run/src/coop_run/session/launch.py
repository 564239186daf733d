"""The session starter's launch request and its reply (pure).

The request is a supervisor's configuration as JSON. The daemon sends it to the zygote
(``coop_run.session.zygote``), which hands it to a spare; the network mode travels by name and
its object is made in the supervisor, the id map is the spare's own. Checked field by
field on the way in: ``SupervisorError`` if malformed. The reply, from the supervisor to
whoever started it, is one line of JSON: ``{"pid": N}`` once the agent runs, or
``{"error": "..."}``.

Also where a started supervisor is found: its socket and its state record.

The daemon imports this module and the two pure configuration modules it decodes into.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coop_run.errors import SupervisorError
from coop_run.sandbox.config import SandboxConfig
from coop_run.session.config import SupervisorConfig

# Bytes of one launch message: a SOCK_SEQPACKET record must fit the socket's send buffer
# (net.core.wmem_default, 208 KiB on Debian), else the send fails with EMSGSIZE.
MAX_LAUNCH = 128 * 1024
START_TIMEOUT = 20.0  # from a launch to the supervisor's reply (its agent running)
_SANDBOX_PATHS = ("session_dir", "workspace", "user_home")


def encode_launch(config: SupervisorConfig, *, network: str, coop_home: Path) -> bytes:
    """One launch request: the supervisor's configuration with the network by name."""
    box = config.sandbox
    if box.network is not None or box.idmap is not None:
        raise ValueError("a launched sandbox gets its network and id map in the supervisor")
    sandbox = {
        "name": box.name, "layers": [str(p) for p in box.layers],
        "session_dir": str(box.session_dir), "workspace": str(box.workspace),
        "workspace_inside": box.workspace_inside, "host_image": box.host_image,
        "persist": list(box.persist), "home": box.home, "env": dict(box.env),
        "user_home": None if box.user_home is None else str(box.user_home),
        "created": box.created,
    }
    message = {
        "sandbox": sandbox, "network": network, "coop_home": str(coop_home),
        "agent": list(config.agent), "agent_env": dict(config.agent_env),
        "shell": list(config.shell), "auto_restart": config.auto_restart,
        "restart_delay_ms": config.restart_delay_ms,
        "restart_max_delay_ms": config.restart_max_delay_ms,
        "cols": config.cols, "rows": config.rows, "scrollback": config.scrollback,
        "max_backlog": config.max_backlog, "stop_grace": config.stop_grace,
        "log_file": None if config.log_file is None else str(config.log_file),
    }
    return json.dumps(message, separators=(",", ":")).encode()


def _typed(table: Mapping[str, Any], key: str, kind: type | tuple[type, ...],
           *, optional: bool = False) -> Any:
    value = table.get(key)
    if value is None and optional:
        return None
    if isinstance(value, bool) != (kind is bool) or not isinstance(value, kind):
        raise SupervisorError(f"malformed launch request: {key!r}")
    return value


def _strings(table: Mapping[str, Any], key: str) -> list[str]:
    value = _typed(table, key, list)
    if not all(isinstance(item, str) for item in value):
        raise SupervisorError(f"malformed launch request: {key!r}")
    return [str(item) for item in value]


def _string_map(table: Mapping[str, Any], key: str) -> dict[str, str]:
    value = _typed(table, key, dict)
    if not all(isinstance(v, str) for v in value.values()):
        raise SupervisorError(f"malformed launch request: {key!r}")
    return {str(k): str(v) for k, v in value.items()}


def decode_launch(data: bytes) -> tuple[SupervisorConfig, str, Path]:
    """(configuration without network, network mode, COOP_HOME); ``SupervisorError``."""
    try:
        message = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise SupervisorError("malformed launch request: not JSON") from exc
    if not isinstance(message, dict):
        raise SupervisorError("malformed launch request: not an object")
    box = _typed(message, "sandbox", dict)
    paths = {key: _typed(box, key, str, optional=key == "user_home") for key in _SANDBOX_PATHS}
    sandbox = SandboxConfig(
        name=_typed(box, "name", str),
        layers=[Path(p) for p in _strings(box, "layers")],
        session_dir=Path(paths["session_dir"]),
        workspace=Path(paths["workspace"]),
        workspace_inside=_typed(box, "workspace_inside", str),
        host_image=_typed(box, "host_image", bool),
        persist=_strings(box, "persist"),
        home=_typed(box, "home", str),
        env=_string_map(box, "env"),
        user_home=None if paths["user_home"] is None else Path(paths["user_home"]),
        created=_typed(box, "created", int, optional=True),
    )
    log_file = _typed(message, "log_file", str, optional=True)
    config = SupervisorConfig(
        sandbox=sandbox,
        agent=_strings(message, "agent"),
        agent_env=_string_map(message, "agent_env"),
        shell=_strings(message, "shell"),
        auto_restart=_typed(message, "auto_restart", bool),
        restart_delay_ms=_typed(message, "restart_delay_ms", int),
        restart_max_delay_ms=_typed(message, "restart_max_delay_ms", int),
        cols=_typed(message, "cols", int),
        rows=_typed(message, "rows", int),
        scrollback=_typed(message, "scrollback", int),
        max_backlog=_typed(message, "max_backlog", int),
        stop_grace=float(_typed(message, "stop_grace", (int, float))),
        log_file=None if log_file is None else Path(log_file),
    )
    if not config.agent:
        raise SupervisorError("malformed launch request: empty agent command")
    return config, _typed(message, "network", str), Path(_typed(message, "coop_home", str))


def started_reply(pid: int) -> bytes:
    return json.dumps({"pid": pid}).encode() + b"\n"


def failed_reply(message: str) -> bytes:
    return json.dumps({"error": message}).encode() + b"\n"


def parse_reply(data: bytes) -> int:
    """The supervisor's pid from its start-up reply; ``SupervisorError`` with its own
    message when it failed."""
    try:
        reply = json.loads(data)
    except ValueError:
        reply = None
    if isinstance(reply, dict) and "error" in reply:
        raise SupervisorError(str(reply["error"]))
    pid = reply.get("pid") if isinstance(reply, dict) else None
    if not isinstance(pid, int) or isinstance(pid, bool):
        raise SupervisorError("the supervisor sent a malformed start-up reply")
    return pid


# --- where a started supervisor is found ------------------------------------------------


@dataclass(frozen=True)
class SupervisorHandle:
    """What the starter learns: the supervisor's pid and where it listens."""

    pid: int
    socket_path: Path
    state_path: Path

