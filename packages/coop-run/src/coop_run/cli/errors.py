"""The one place where errors become exit codes and one-line messages (seed 11.7).

Commands never choose exit codes themselves: they raise, and ``main()`` asks this module
what to print and how to exit, so the mapping cannot drift between commands.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, TypeAlias

from coop_build.paths import display_path

if TYPE_CHECKING:  # only annotations here: ``main`` imports this module on every run
    from coop_build.errors import CoopBuildError, StepFailedError
    from coop_run.errors import CoopError

    # Either package's error root: both carry ``code`` and ``message``.
    AnyCoopError: TypeAlias = CoopBuildError | CoopError

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_SESSION_NOT_FOUND = 3
EXIT_DAEMON_FAILED = 4
EXIT_ROOTFS_NOT_BUILT = 5
EXIT_TUNNEL_FAILED = 6
EXIT_INTERRUPTED = 130

# Error codes (``CoopBuildError.code``) whose exit code is not the general 1.
_EXIT_BY_CODE: Mapping[str, int] = {
    "INVALID_COOPFILE": EXIT_USAGE,
    "INVALID_REFERENCE": EXIT_USAGE,
    "UNTRUSTED_COOPFILE": EXIT_USAGE,
    "INVALID_ARGUMENT": EXIT_USAGE,
    "ROOTFS_NOT_BUILT": EXIT_ROOTFS_NOT_BUILT,
    "INTERRUPTED": EXIT_INTERRUPTED,
    # coop_run: the daemon and its answers (SPEC 5, 6)
    "SESSION_NOT_FOUND": EXIT_SESSION_NOT_FOUND,
    "DAEMON_FAILED": EXIT_DAEMON_FAILED,
    "DAEMON_START_FAILED": EXIT_DAEMON_FAILED,
    "DAEMON_NOT_RUNNING": EXIT_DAEMON_FAILED,
    "DAEMON_RUNNING": EXIT_DAEMON_FAILED,
    "SOCKET_REFUSED": EXIT_DAEMON_FAILED,
}

# How many lines of a failed step's output to show under the error line.
TAIL_LINES = 15


def exit_code_for(error: AnyCoopError) -> int:
    """The seed's exit code for a library error."""
    return _EXIT_BY_CODE.get(error.code, EXIT_ERROR)


def describe_error(
    error: AnyCoopError, environ: Mapping[str, str] | None = None
) -> list[str]:
    """The lines to print for ``error``: one ``error:`` line, then indented detail.

    A failed step gets what failed, how, and where the full log is, then the end of its
    output, so the user can act without opening anything.
    """
    from coop_build.errors import StepFailedError

    if isinstance(error, StepFailedError):
        line = f"error: {_step_failure_line(error, environ)}"
        if error.reason is not None:  # coop knows why: that line says it all
            return [line]
        tail = error.log_tail[-TAIL_LINES:]
        return [line, *(f"    {text}" for text in tail)]
    lines = [f"error: {error.message}"]
    stderr = getattr(error, "stderr", "")
    if isinstance(stderr, str) and stderr.strip():
        lines.extend(f"    {text}" for text in stderr.strip().splitlines()[-TAIL_LINES:])
    log_tail = getattr(error, "log_tail", None)  # DaemonStartError: the daemon log's end
    if isinstance(log_tail, list):
        lines.extend(f"    {text}" for text in log_tail[-TAIL_LINES:])
    return lines


def _step_failure_line(error: StepFailedError, environ: Mapping[str, str] | None) -> str:
    """``step [3/5] "make" failed with exit code 2; see ~/.coop/logs/build/KEY.log``
    (with a reason: ``step [3/5] "make" failed: REASON; see ...``)."""
    where = f"[{error.index}/{error.total}] " if error.index and error.total else ""
    if error.reason is not None:
        status = f"failed: {error.reason}"
    elif error.exit_code is not None:
        status = f"failed with exit code {error.exit_code}"
    else:
        status = "was killed"
    line = f'step {where}"{error.step}" {status}' if error.step else error.message
    if error.log_path is not None:
        line = f"{line}; see {display_path(error.log_path, environ)}"
    return line

