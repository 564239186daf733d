"""The one place coop runs ``umoci``: argv in, our ToolError with umoci's words out."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from collections.abc import Sequence

from coop_build.errors import ToolError

logger = logging.getLogger(__name__)

MISSING = "umoci is not installed (apt-get install umoci)"
# umoci's CLI logger prefixes lines with a bullet; errors with a cross.
_MARKS = "•⨯"


def umoci_path() -> str:
    """The umoci executable, or ToolError telling how to install it."""
    exe = shutil.which("umoci")
    if exe is None:
        raise ToolError(MISSING, tool="umoci")
    return exe


def run_umoci(args: Sequence[str | os.PathLike[str]], *, timeout: float | None = None) -> str:
    """Run ``umoci ARGS``; return its stdout, or raise ToolError carrying its stderr."""
    argv = [umoci_path(), *(os.fspath(a) for a in args)]
    logger.debug("running %s", " ".join(argv))
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                                check=False, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        raise ToolError(f"umoci {_command(args)} timed out after {timeout:g}s", tool="umoci",
                        stderr=_text(exc.stderr)) from exc
    except OSError as exc:
        raise ToolError(f"cannot run umoci: {exc.strerror}", tool="umoci") from exc
    if result.returncode != 0:
        raise ToolError(
            f"umoci {_command(args)} failed: {error_line(result.stderr, result.returncode)}",
            tool="umoci",
            stderr=result.stderr,
        )
    return result.stdout


def error_line(stderr: str, returncode: int) -> str:
    """The most telling line of umoci's stderr (its last error, else its last line)."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("⨯")]
    pick = errors[-1] if errors else (lines[-1] if lines else f"exit {returncode}")
    return pick.lstrip(_MARKS).strip()


def _command(args: Sequence[str | os.PathLike[str]]) -> str:
    words = [os.fspath(a) for a in args if not os.fspath(a).startswith("-")]
    return " ".join(words[:2]) if words[:1] == ["raw"] else (words[0] if words else "")


def _text(data: str | bytes | None) -> str:
    if isinstance(data, bytes):
        return data.decode("utf-8", "replace")
    return data or ""
