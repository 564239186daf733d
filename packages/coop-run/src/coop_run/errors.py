"""One exception family for coop_run; every error carries a stable code.

``CoopError(code, message)`` is the root; the subclasses fix their code so callers write
``raise SandboxError("...")``. Messages are one line and never contain expanded secrets.
Append new classes at the end (several modules own subclasses here).
"""

from __future__ import annotations


class CoopError(Exception):
    """Root of every error coop_run raises on purpose."""

    code = "COOP_ERROR"

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return self.message


class SandboxError(CoopError):
    """Starting, using or stopping a session sandbox failed."""

    default_code = "SANDBOX_FAILED"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(code or self.default_code, message)


class BindPathError(SandboxError):
    """A host path to bind-mount resolves outside the user's home and the workspace."""

    default_code = "BIND_PATH_REFUSED"


class NetworkError(SandboxError):
    """Setting up or tearing down a session's network failed.

    ``stderr`` holds the words of the tool that failed (ip, nft, pasta), if one did.
    """

    default_code = "NETWORK_FAILED"

    def __init__(self, message: str, *, stderr: str = "", code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.stderr = stderr


class ProtocolError(CoopError):
    """A message on the daemon socket broke the protocol (framing, handshake, fields).

    The code is the one sent back to the peer (``MESSAGE_TOO_LARGE``, ``INVALID_COMMAND``,
    ``VERSION_MISMATCH``, ``MALFORMED_MESSAGE``).
    """

    default_code = "INVALID_COMMAND"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(code or self.default_code, message)


class DaemonError(CoopError):
    """The daemon could not be started, reached or bound (exit code 4)."""

    default_code = "DAEMON_FAILED"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(code or self.default_code, message)


class DaemonUnavailableError(DaemonError):
    """No daemon listens on the socket (missing, or connection refused)."""

    default_code = "DAEMON_NOT_RUNNING"


class SocketPathError(DaemonError):
    """The socket path is unsafe to use: a symlink, not a socket, or someone else's."""

    default_code = "SOCKET_REFUSED"


class RemoteError(CoopError):
    """The daemon answered ``{"ok": false, "error": CODE, "message": ...}``."""


class SessionNotFoundError(RemoteError):
    """No session by that name or workspace (exit code 3)."""

    def __init__(self, message: str) -> None:
        super().__init__("SESSION_NOT_FOUND", message)


class DaemonStartError(DaemonError):
    """The daemon did not come up; ``log_tail`` holds the end of its log for the user."""

    def __init__(self, message: str, *, log_tail: list[str] | None = None) -> None:
        super().__init__(message)
        self.log_tail = list(log_tail or [])


class SupervisorError(CoopError):
    """A session supervisor could not be started or failed while serving."""

    default_code = "SUPERVISOR_FAILED"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(code or self.default_code, message)
