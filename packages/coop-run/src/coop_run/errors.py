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
