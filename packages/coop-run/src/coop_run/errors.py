"""One exception family for coop_run; every error carries a stable code.

Each class names its code once, in its ``class`` line (``code="..."``); a subclass that
forgets it, or reuses another class's code, fails at import. Every error is built the same
way, ``SomeError(message, *, code=..., detail=...)``: ``code`` overrides the class's for an
error that carries a wire code (``INVALID_COMMAND``, ``SESSION_NOT_FOUND``: what the daemon
answers a client), and details (a tool's stderr, a log's tail) are keyword-only. Messages
are one line and never contain expanded secrets. The CLI maps codes to exit codes in one
place (``cli/errors.py``). No ``dataclasses`` here: ``coop ls`` imports this module.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

_CLASS_BY_CODE: dict[str, type[CoopError]] = {}


class CoopError(Exception):
    """Root of every error coop_run raises on purpose."""

    CODE: ClassVar[str] = "COOP_ERROR"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.CODE

    def __init_subclass__(cls, *, code: str, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        taken = _CLASS_BY_CODE.setdefault(code, cls)
        if taken is not cls:
            raise TypeError(f"{cls.__name__}: code {code!r} is already {taken.__name__}'s")
        cls.CODE = code

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, code={self.code!r})"


_CLASS_BY_CODE[CoopError.CODE] = CoopError


class SandboxError(CoopError, code="SANDBOX_FAILED"):
    """Starting, using or stopping a session sandbox failed."""


class InitProtocolError(SandboxError, code="INIT_PROTOCOL"):
    """A record on a sandbox's init channel that does not follow its protocol (the sender
    is buggy: the supervisor, or ``coop-init``). A sandbox's error, not a client's: it
    must never read as a client breaking the socket protocol."""


class BindPathError(SandboxError, code="BIND_PATH_REFUSED"):
    """A host path to bind-mount resolves outside the user's home and the workspace."""


class NetworkError(SandboxError, code="NETWORK_FAILED"):
    """Setting up or tearing down a session's network failed; ``stderr`` holds the words
    of the tool that failed (ip, nft, pasta), if one did."""

    def __init__(self, message: str, *, code: str | None = None, stderr: str = "") -> None:
        super().__init__(message, code=code)
        self.stderr = stderr


class ProtocolError(CoopError, code="INVALID_COMMAND"):
    """A message on a coop socket broke the protocol (framing, handshake, fields).

    The code is the one sent back to the peer (``MESSAGE_TOO_LARGE``, ``INVALID_COMMAND``,
    ``VERSION_MISMATCH``, ``MALFORMED_MESSAGE``).
    """


class FrameTooLargeError(ProtocolError, code="MESSAGE_TOO_LARGE"):
    """A frame declared a payload over the limit; the stream cannot be trusted after it."""

    def __init__(self, message: str, *, code: str | None = None, size: int = 0) -> None:
        super().__init__(message, code=code)
        self.size = size

    @classmethod
    def over(cls, size: int, limit: int) -> FrameTooLargeError:
        return cls(f"message of {size} bytes is over the {limit}-byte limit", size=size)


class MalformedFrameError(ProtocolError, code="MALFORMED_MESSAGE"):
    """One frame's payload was not what the mode expects (JSON object, known tag).

    The framing itself stays in step, so a decoder returns this in place of the message
    and carries on with the next frame.
    """


class DaemonError(CoopError, code="DAEMON_FAILED"):
    """The daemon could not be started, reached or bound (exit code 4)."""


class DaemonUnavailableError(DaemonError, code="DAEMON_NOT_RUNNING"):
    """No daemon listens on the socket (missing, or connection refused)."""


class SocketPathError(DaemonError, code="SOCKET_REFUSED"):
    """The socket path is unsafe to use: a symlink, not a socket, or someone else's."""


class DaemonStartError(DaemonError, code="DAEMON_START_FAILED"):
    """The daemon did not come up; ``log_tail`` holds the end of its log for the user."""

    def __init__(self, message: str, *, code: str | None = None,
                 log_tail: list[str] | None = None) -> None:
        super().__init__(message, code=code)
        self.log_tail = list(log_tail or [])


class UsageError(CoopError, code="INVALID_ARGUMENT"):
    """A command's argument cannot be used (exit code 2), found after click parsed it
    (e.g. by the daemon)."""


class RemoteError(CoopError, code="REMOTE_ERROR"):
    """The daemon or a supervisor answered ``{"ok": false, "error": CODE, "message": ...}``;
    ``code`` is the peer's."""


class SessionNotFoundError(RemoteError, code="SESSION_NOT_FOUND"):
    """No session by that name or workspace (exit code 3)."""


class UntrustedCoopfileError(CoopError, code="UNTRUSTED_COOPFILE"):
    """A workspace Coopfile asks for more than the defaults and the user has not trusted
    these bytes of it (exit code 2; ``coop_run.trust``). ``path`` is the file as trusted,
    ``sha256`` the digest of the bytes read, ``asks`` each thing it asks as a
    ``trust.Ask`` tuple (kind, key, value as written, target): never a variable's value.
    The daemon raises it; a client rebuilds it from the refusal."""

    def __init__(self, message: str, *, code: str | None = None, path: str = "",
                 sha256: str = "", asks: Sequence[tuple[str, str, str, str]] = ()) -> None:
        super().__init__(message, code=code)
        self.path = path
        self.sha256 = sha256
        self.asks = list(asks)


class SupervisorError(CoopError, code="SUPERVISOR_FAILED"):
    """A session supervisor could not be started or failed while serving."""
