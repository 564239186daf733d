"""One exception family for coop_build; every error carries a stable code.

Callers (the ``coop`` CLI, CI scripts) map ``code`` to exit codes or messages in one
place; messages are one line and never contain expanded secrets.

Each class names its code once, in its ``class`` line (``code="..."``); a subclass that
forgets it, or reuses another class's code, fails at import. Every error is built the same
way, ``SomeError(message, *, detail=...)``: the details a caller may show (a tool's
stderr, a step's log tail) are keyword-only dataclass fields, never a hand-written
``__init__``.
"""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass
from pathlib import Path
from typing import Any, ClassVar

_CLASS_BY_CODE: dict[str, type[CoopBuildError]] = {}


@dataclass(eq=False)
class CoopBuildError(Exception):
    """Root of every error coop_build raises on purpose."""

    code: ClassVar[str] = "BUILD_FAILED"
    message: str

    def __init_subclass__(cls, *, code: str, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        taken = _CLASS_BY_CODE.setdefault(code, cls)
        if taken is not cls:
            raise TypeError(f"{cls.__name__}: code {code!r} is already {taken.__name__}'s")
        cls.code = code

    def __post_init__(self) -> None:
        super().__init__(self.message)  # ``args``, for tracebacks and ``logging``

    def __str__(self) -> str:
        return self.message


_CLASS_BY_CODE[CoopBuildError.code] = CoopBuildError


class CoopfileError(CoopBuildError, code="INVALID_COOPFILE"):
    """The Coopfile (any layer) is invalid: names file, key path and problem."""


class InvalidReferenceError(CoopfileError, code="INVALID_REFERENCE"):
    """An image reference that cannot be parsed."""


class RegistryError(CoopBuildError, code="REGISTRY_ERROR"):
    """Talking to an OCI registry failed (network, HTTP status, protocol)."""


class AuthError(RegistryError, code="REGISTRY_AUTH"):
    """The registry refused our credentials (or we had none and it wants some)."""


class NotFoundError(RegistryError, code="REGISTRY_NOT_FOUND"):
    """The repository, tag, manifest or blob does not exist."""


class DigestMismatchError(RegistryError, code="DIGEST_MISMATCH"):
    """Content did not hash to the digest that named it."""


class UnsupportedImageError(RegistryError, code="UNSUPPORTED_IMAGE"):
    """A media type, compression or platform we cannot use."""


@dataclass(eq=False)
class ToolError(CoopBuildError, code="TOOL_FAILED"):
    """An external tool (umoci, newuidmap, ...) is missing or failed.

    ``stderr`` holds the tool's own words so the user sees what really went wrong.
    """

    _: KW_ONLY
    tool: str
    stderr: str = ""


class InheritedPathError(CoopBuildError, code="INHERITED_PATH"):
    """A TLS trust variable of the invoking environment names a path no build step may
    have bound (relative, unusable, or the kernel's or coop's own)."""


class NamespaceError(CoopBuildError, code="NAMESPACE_FAILED"):
    """Creating or entering the build namespaces failed."""


@dataclass(eq=False)
class StepFailedError(CoopBuildError, code="STEP_FAILED"):
    """A build step (package install, setup command, agent install) exited non-zero."""

    _: KW_ONLY
    step: str
    exit_code: int | None
    log_tail: list[str]
    log_path: Path | None
    index: int | None = None  # 1-based position in the plan, as shown by "[i/N]"
    total: int | None = None
    reason: str | None = None  # why, when coop knows it in one line (then no tail is shown)


class BuildInterruptedError(CoopBuildError, code="INTERRUPTED"):
    """The build was interrupted (SIGINT); nothing half-built was kept."""


class StoreError(CoopBuildError, code="STORE_ERROR"):
    """The rootfs store is inconsistent or a path in it cannot be used."""


class RootfsNotBuiltError(CoopBuildError, code="ROOTFS_NOT_BUILT"):
    """A workspace needs a built rootfs and has none: run ``coop init``."""
