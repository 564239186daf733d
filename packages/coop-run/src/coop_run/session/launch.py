"""The session starter's launch request and its reply (pure).

The request is a supervisor's configuration as JSON. The daemon sends it to the zygote
(``coop_run.session.zygote``), which hands it to a spare; the network mode travels by name
and its object is made in the supervisor, the id map is the spare's own. Declared as
typed messages (``ipc.schema``) and checked field by field on the way in:
``SupervisorError`` if malformed. The reply, from the supervisor to
whoever started it, is one line of JSON: ``{"pid": N}`` once the agent runs, or
``{"error": "..."}``.

Also where a started supervisor is found: its socket and its state record.

The daemon imports this module and the two pure configuration modules it decodes into.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from coop_run.errors import ProtocolError, SupervisorError
from coop_run.ipc.schema import WireMessage, decode, encode
from coop_run.sandbox.config import SandboxConfig
from coop_run.session.config import SupervisorConfig

# Bytes of one launch message: a SOCK_SEQPACKET record must fit the socket's send buffer
# (net.core.wmem_default, 208 KiB on Debian), else the send fails with EMSGSIZE.
MAX_LAUNCH = 128 * 1024
START_TIMEOUT = 20.0  # from a launch to the supervisor's reply (its agent running)


class LaunchBind(WireMessage):
    """A read-only bind of an inherited file or directory (``SandboxConfig.readonly_binds``)."""

    source: str
    target: str
    directory: bool


class LaunchEndpoint(WireMessage):
    """An inherited proxy's address and port, which a ``veth`` network opens."""

    address: str
    port: int


class LaunchSandbox(WireMessage):
    """The sandbox part of a launch: ``SandboxConfig`` without its live objects."""

    name: str
    layers: list[str]
    session_dir: str
    workspace: str
    workspace_inside: str
    host_image: bool
    persist: list[str]
    home: str
    env: dict[str, str]
    user_home: str | None
    created: int | None
    hide: list[str]
    readonly_binds: list[LaunchBind]
    proxies: list[LaunchEndpoint]


class LaunchRequest(WireMessage):
    """What the daemon sends the zygote: a supervisor's configuration, the network mode by
    name (its object is made in the supervisor) and the daemon's ``COOP_HOME``."""

    sandbox: LaunchSandbox
    network: str
    coop_home: str
    agent: list[str]
    agent_env: dict[str, str]
    shell: list[str]
    auto_restart: bool
    restart_delay_ms: int
    restart_max_delay_ms: int
    cols: int
    rows: int
    scrollback: int
    max_backlog: int
    stop_grace: float
    silence_burst: int
    silence_after: float
    web_idle: float
    log_file: str | None
    inherited: list[str]
    block_sequences: list[str]  # hex: the decoded bytes of [input_filter] block_sequences
    ctrl_c_debounce_ms: int


class StartedReply(WireMessage):
    """The supervisor's start-up reply once its agent runs."""

    pid: int


class FailedReply(WireMessage):
    """The supervisor's start-up reply when it could not start."""

    error: str


def encode_launch(config: SupervisorConfig, *, network: str, coop_home: Path) -> bytes:
    """One launch request: the supervisor's configuration with the network by name."""
    box = config.sandbox
    if box.network is not None or box.idmap is not None:
        raise ValueError("a launched sandbox gets its network and id map in the supervisor")
    sandbox = LaunchSandbox(
        name=box.name, layers=[str(p) for p in box.layers], session_dir=str(box.session_dir),
        workspace=str(box.workspace), workspace_inside=box.workspace_inside,
        host_image=box.host_image, persist=list(box.persist), home=box.home,
        env=dict(box.env), user_home=None if box.user_home is None else str(box.user_home),
        created=box.created, hide=[str(p) for p in box.hide],
        readonly_binds=[LaunchBind(s, t, d) for s, t, d in box.readonly_binds],
        proxies=[LaunchEndpoint(a, p) for a, p in box.proxies])
    request = LaunchRequest(
        sandbox=sandbox, network=network, coop_home=str(coop_home), agent=list(config.agent),
        agent_env=dict(config.agent_env), shell=list(config.shell),
        auto_restart=config.auto_restart, restart_delay_ms=config.restart_delay_ms,
        restart_max_delay_ms=config.restart_max_delay_ms, cols=config.cols, rows=config.rows,
        scrollback=config.scrollback, max_backlog=config.max_backlog,
        stop_grace=config.stop_grace, silence_burst=config.silence_burst,
        silence_after=config.silence_after, web_idle=config.web_idle,
        log_file=None if config.log_file is None else str(config.log_file),
        inherited=list(config.inherited),
        block_sequences=[bytes(seq).hex() for seq in config.block_sequences],
        ctrl_c_debounce_ms=config.ctrl_c_debounce_ms)
    return json.dumps(encode(request), separators=(",", ":")).encode()


def decode_launch(data: bytes) -> tuple[SupervisorConfig, str, Path]:
    """(configuration without network, network mode, COOP_HOME); ``SupervisorError``."""
    try:
        message = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise SupervisorError("malformed launch request: not JSON") from exc
    if not isinstance(message, dict):
        raise SupervisorError("malformed launch request: not an object")
    try:
        request = decode(LaunchRequest, message)
    except ProtocolError as exc:
        raise SupervisorError(f"malformed launch request: {exc.message}") from None
    if not request.agent:
        raise SupervisorError("malformed launch request: empty agent command")
    try:
        sequences = tuple(bytes.fromhex(seq) for seq in request.block_sequences)
    except ValueError:
        raise SupervisorError("malformed launch request: block_sequences must be hex") from None
    box = request.sandbox
    sandbox = SandboxConfig(
        name=box.name, layers=tuple(Path(p) for p in box.layers),
        session_dir=Path(box.session_dir), workspace=Path(box.workspace),
        workspace_inside=box.workspace_inside, host_image=box.host_image,
        persist=tuple(box.persist), home=box.home, env=box.env,
        user_home=None if box.user_home is None else Path(box.user_home),
        created=box.created, hide=tuple(Path(p) for p in box.hide),
        readonly_binds=tuple((b.source, b.target, b.directory) for b in box.readonly_binds),
        proxies=tuple((e.address, e.port) for e in box.proxies))
    config = SupervisorConfig(
        sandbox=sandbox, agent=tuple(request.agent), agent_env=request.agent_env,
        shell=tuple(request.shell), auto_restart=request.auto_restart,
        restart_delay_ms=request.restart_delay_ms,
        restart_max_delay_ms=request.restart_max_delay_ms, cols=request.cols,
        rows=request.rows, scrollback=request.scrollback, max_backlog=request.max_backlog,
        stop_grace=request.stop_grace, silence_burst=request.silence_burst,
        silence_after=request.silence_after, web_idle=request.web_idle,
        log_file=None if request.log_file is None else Path(request.log_file),
        inherited=tuple(request.inherited), block_sequences=sequences,
        ctrl_c_debounce_ms=request.ctrl_c_debounce_ms)
    return config, request.network, Path(request.coop_home)


def started_reply(pid: int) -> bytes:
    return json.dumps(encode(StartedReply(pid))).encode() + b"\n"


def failed_reply(message: str) -> bytes:
    return json.dumps(encode(FailedReply(message))).encode() + b"\n"


def parse_reply(data: bytes) -> int:
    """The supervisor's pid from its start-up reply; ``SupervisorError`` with its own
    message when it failed."""
    try:
        reply = json.loads(data)
    except ValueError:
        reply = None
    if isinstance(reply, dict) and "error" in reply:
        try:
            failed = decode(FailedReply, reply)
        except ProtocolError:
            raise SupervisorError("the supervisor sent a malformed start-up reply") from None
        raise SupervisorError(failed.error)
    malformed = SupervisorError("the supervisor sent a malformed start-up reply")
    if not isinstance(reply, dict):
        raise malformed
    try:
        return decode(StartedReply, reply).pid
    except ProtocolError:
        raise malformed from None


# --- where a started supervisor is found ------------------------------------------------


@dataclass(frozen=True)
class SupervisorHandle:
    """What the starter learns: the supervisor's pid and where it listens."""

    pid: int
    socket_path: Path
    state_path: Path

