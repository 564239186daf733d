"""One exception family for coop_build; every error carries a stable code.

Callers (the ``coop`` CLI, CI scripts) map ``code`` to exit codes or messages in one
place; messages are one line and never contain expanded secrets.
"""

from __future__ import annotations

from pathlib import Path


class CoopBuildError(Exception):
    """Root of every error coop_build raises on purpose."""

    code = "BUILD_FAILED"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class CoopfileError(CoopBuildError):
    """The Coopfile (any layer) is invalid: names file, key path and problem."""

    code = "INVALID_COOPFILE"


class InvalidReferenceError(CoopfileError):
    """An image reference that cannot be parsed."""

    code = "INVALID_REFERENCE"


class RegistryError(CoopBuildError):
    """Talking to an OCI registry failed (network, HTTP status, protocol)."""

    code = "REGISTRY_ERROR"


class AuthError(RegistryError):
    """The registry refused our credentials (or we had none and it wants some)."""

    code = "REGISTRY_AUTH"


class NotFoundError(RegistryError):
    """The repository, tag, manifest or blob does not exist."""

    code = "REGISTRY_NOT_FOUND"


class DigestMismatchError(RegistryError):
    """Content did not hash to the digest that named it."""

    code = "DIGEST_MISMATCH"


class UnsupportedImageError(RegistryError):
    """A media type, compression or platform we cannot use."""

    code = "UNSUPPORTED_IMAGE"


class ToolError(CoopBuildError):
    """An external tool (umoci, newuidmap, ...) is missing or failed.

    ``stderr`` holds the tool's own words so the user sees what really went wrong.
    """

    code = "TOOL_FAILED"

    def __init__(self, message: str, *, tool: str, stderr: str = "") -> None:
        super().__init__(message)
        self.tool = tool
        self.stderr = stderr


class NamespaceError(CoopBuildError):
    """Creating or entering the build namespaces failed."""

    code = "NAMESPACE_FAILED"


class StepFailedError(CoopBuildError):
    """A build step (package install, setup command, agent install) exited non-zero."""

    code = "STEP_FAILED"

    def __init__(
        self,
        message: str,
        *,
        step: str,
        exit_code: int | None,
        log_tail: list[str],
        log_path: Path | None,
        index: int | None = None,
        total: int | None = None,
    ) -> None:
        super().__init__(message)
        self.step = step
        self.index = index  # 1-based position in the plan, as shown by "[i/N]"
        self.total = total
        self.exit_code = exit_code
        self.log_tail = log_tail
        self.log_path = log_path


class BuildInterruptedError(CoopBuildError):
    """The build was interrupted (SIGINT); nothing half-built was kept."""

    code = "INTERRUPTED"


class StoreError(CoopBuildError):
    """The rootfs store is inconsistent or a path in it cannot be used."""

    code = "STORE_ERROR"


class RootfsNotBuiltError(CoopBuildError):
    """A workspace needs a built rootfs and has none: run ``coop init``."""

    code = "ROOTFS_NOT_BUILT"
