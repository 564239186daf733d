"""Every path the runtime uses under ``COOP_HOME`` and inside a session's directory.

A leaf module (it imports only ``coop_build.paths`` and the errors), so that each process agrees on
where the others listen and keep their records without importing their code: the CLI
finds the daemon's socket, the daemon finds a supervisor's, the sandbox its own files.
Computed, never created here. The build store's half of ``COOP_HOME`` (cache, layers,
rootfs, workspaces) is ``coop_build.paths.CoopPaths``. No ``dataclasses``: ``coop ls``
imports this module for the daemon's socket.
"""

from __future__ import annotations

import os
from pathlib import Path

from coop_build.paths import CoopPaths
from coop_run.errors import SandboxError

SOCKET = "sock"
DAEMON_PID = "daemon.pid"
DAEMON_LOCK = "daemon.lock"
DAEMON_LOG = "daemon.log"
NETWORK_LOCK = "network.lock"
NETWORK_STATE = "network.json"
TRUST = "trust.json"
TRUST_LOCK = "trust.lock"
WEB_SERVER = "web.json"


class SessionDir:
    """``sessions/<name>/``: the sandbox's writable half, its records and sockets."""

    __slots__ = ("path",)

    def __init__(self, path: Path) -> None:
        self.path = path

    def __repr__(self) -> str:
        return f"SessionDir({str(self.path)!r})"

    @property
    def upper(self) -> Path:
        """The overlay's upper directory: what the session wrote to its root."""
        return self.path / "upper"

    @property
    def work(self) -> Path:
        return self.path / "work"

    @property
    def root(self) -> Path:
        """The empty mount point of the overlay."""
        return self.path / "root"

    @property
    def etc(self) -> Path:
        """Generated hostname, hosts, resolv.conf: bound read-only, never in a layer."""
        return self.path / "etc"

    @property
    def host(self) -> Path:
        """image = "host": ``upperN`` and ``workN`` of the overlay at the Nth host directory
        (``coop_build.hostlayer``): what the session wrote there."""
        return self.path / "host"

    @property
    def lower(self) -> Path:
        """The empty lower layer of a sandbox started without a build (tests, tools)."""
        return self.path / "lower"

    @property
    def persist(self) -> Path:
        """Kept across sessions (SPEC 4.2's ``persist`` binds)."""
        return self.path / "persist"

    @property
    def sandbox_state(self) -> Path:
        """``sandbox.json``: who owns the session's files (the creator, then the init)."""
        return self.path / "sandbox.json"

    @property
    def lock(self) -> Path:
        """Held while a sandbox claims or cleans the directory."""
        return self.path / ".lock"

    @property
    def supervisor_socket(self) -> Path:
        return self.path / "supervisor.sock"

    @property
    def supervisor_state(self) -> Path:
        """``supervisor.json``: how a new daemon finds and checks a running supervisor."""
        return self.path / "supervisor.json"

    @property
    def network_state(self) -> Path:
        """``network.json``: what the network mode made on the host, for ``reap_stale``."""
        return self.path / NETWORK_STATE

    @property
    def pasta_pid(self) -> Path:
        return self.path / "pasta.pid"


TRANSIENT = ("upper", "work", "root", "etc", "lower", "host")
"""What a stopped sandbox leaves to remove (``persist`` and the records stay)."""


class RunLayout:
    """The runtime's half of one ``COOP_HOME`` (SPEC 11)."""

    def __init__(self, paths: CoopPaths) -> None:
        self.paths = paths

    @property
    def socket(self) -> Path:
        """The daemon's socket, unless ``--socket`` names another."""
        return self.paths.home / SOCKET

    @property
    def daemon_pid(self) -> Path:
        return self.paths.home / DAEMON_PID

    @property
    def daemon_lock(self) -> Path:
        """Serialises auto-spawns, so two commands start one daemon."""
        return self.paths.home / DAEMON_LOCK

    @property
    def daemon_log(self) -> Path:
        return self.paths.logs / DAEMON_LOG

    @property
    def network_lock(self) -> Path:
        return self.paths.home / NETWORK_LOCK

    @property
    def trust(self) -> Path:
        """``trust.json``: the workspace Coopfiles the user trusted (``coop_run.trust``)."""
        return self.paths.home / TRUST

    @property
    def trust_lock(self) -> Path:
        return self.paths.home / TRUST_LOCK

    @property
    def web_server(self) -> Path:
        """``web.json`` (0600): a detached web server's port, host and tokens, so that a
        daemon started after a crash serves the same links (``coop serve -d``)."""
        return self.paths.home / WEB_SERVER

    @property
    def sessions(self) -> Path:
        return self.paths.sessions

    def session(self, name: str) -> SessionDir:
        """The directory of session ``name`` (the caller checks the name)."""
        return SessionDir(self.paths.sessions / name)

    def session_log(self, name: str) -> Path:
        return self.paths.logs / "sessions" / f"{name}.log"


def check_session_name(name: str) -> None:
    """Session names are hostnames and directory names: letters, digits, '-', '_', '.'."""
    ok = (0 < len(name) <= 63 and name not in (".", "..") and not name.startswith("-")
          and all(c.isascii() and (c.isalnum() or c in "-_.") for c in name))
    if not ok:
        raise SandboxError(f"invalid session name {name!r} "
                           "(1-63 of a-z, A-Z, 0-9, '-', '_', '.'; not starting with '-')")


# Host directories no session may have bound, whatever a Coopfile asks: the host's own
# configuration and kernel interfaces. ``/`` itself is refused too (not what is below it).
SYSTEM_DIRS = ("/etc", "/proc", "/sys", "/dev", "/boot")


def refused_mount(path: Path, coop_home: Path) -> str | None:
    """Why ``path`` (a real path) may never be a session's workspace, or None: ``/``, a
    system directory or anything below one, or coop's own directory (its sockets and every
    session's files) or anything below it. A workspace that holds coop's directory is
    allowed: the sandbox hides that directory (``SandboxConfig.hide``)."""
    real = Path(os.path.realpath(path))
    home = Path(os.path.realpath(coop_home))
    if real == Path("/"):
        return "the host's root directory is never bound into a session"
    for system in SYSTEM_DIRS:
        if real.is_relative_to(system):  # the directory itself too
            return f"{system} is the host's own and is never bound into a session"
    if real.is_relative_to(home):
        return f"{home} is coop's own directory and is never bound into a session"
    return None
