"""One session's supervisor configuration (pure): built by the daemon, carried in the
launch request (``coop_run.session.launch``), run by ``coop_run.session.supervisor``."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from coop_run.sandbox.config import SandboxConfig

DEFAULT_CAPACITY = 256 * 1024  # scrollback per PTY; SPEC 7.2: at least 256 KiB
DEFAULT_MAX_BACKLOG = 1024 * 1024  # a client's unsent output before it lags
# Silence after a burst marks a PTY as wanting the user (SPEC 13; ``session.attention``):
# at least SILENCE_BURST bytes of output since a client typed, then SILENCE_AFTER seconds
# of quiet. 4 KiB is more than a keystroke's echo or a prompt's redraw, less than a
# finished answer or command; 10 s is longer than the pauses inside a build's output and
# short enough that a phone hears about the end of a job while it still matters.
SILENCE_BURST = 4096
SILENCE_AFTER = 10.0
# A web or tunnel client's window sizes a PTY only while someone is at it
# (``session.sizing``): it counts for WEB_IDLE seconds after it joined, typed, resized,
# was shown again or said ``active``. Five minutes outlasts reading a long answer or
# watching a build without touching anything, and is short enough that a phone left on
# the table stops squeezing the desktop's agent well before the user is back at the
# desk. Tests shorten it with $COOP_WEB_IDLE_SECONDS, read by the daemon (``web_idle``)
# when it configures a session.
WEB_IDLE = 300.0
WEB_IDLE_ENV = "COOP_WEB_IDLE_SECONDS"


@dataclass
class SupervisorConfig:
    """One session's supervisor: its sandbox, its agent and the PTY settings."""

    sandbox: SandboxConfig
    agent: Sequence[str]                       # argv of PTY 0
    agent_env: Mapping[str, str] = field(default_factory=dict)
    shell: Sequence[str] = ("sh",)             # argv of a shell without a command
    auto_restart: bool = True
    restart_delay_ms: int = 1000
    restart_max_delay_ms: int = 30000
    cols: int = 80                             # PTY size while no client is attached
    rows: int = 24
    scrollback: int = DEFAULT_CAPACITY
    max_backlog: int = DEFAULT_MAX_BACKLOG
    stop_grace: float = 5.0                    # kill: SIGTERM, this long, then SIGKILL
    silence_burst: int = SILENCE_BURST         # bytes of output that make a burst
    silence_after: float = SILENCE_AFTER       # quiet after it that marks; <= 0: never
    web_idle: float = WEB_IDLE                 # a web client's window counts this long
    log_file: Path | None = None               # stdout/stderr and logging; None: /dev/null
    inherited: Sequence[str] = ()              # what it inherited, as coop status shows it
    # [input_filter] (SPEC 7.3): web and tunnel input to the agent's PTY
    block_sequences: Sequence[bytes] = ()      # the extra sequences, decoded
    ctrl_c_debounce_ms: int = 500

    @property
    def session_dir(self) -> Path:
        return Path(self.sandbox.session_dir)


def web_idle(environ: Mapping[str, str]) -> float:
    """``$COOP_WEB_IDLE_SECONDS`` if it is a positive, finite number, else ``WEB_IDLE``."""
    try:
        value = float(environ.get(WEB_IDLE_ENV, ""))
    except ValueError:
        return WEB_IDLE
    return value if value > 0 and math.isfinite(value) else WEB_IDLE
