"""One runner for the external tools behind the network modes (ip, nft, nsenter, pasta).

Every failure becomes a ``NetworkError`` carrying the tool's own stderr.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess

from coop_run.errors import NetworkError

logger = logging.getLogger(__name__)

TOOL_TIMEOUT = 20.0


def tool_path(name: str) -> str:
    """The absolute path of ``name`` (sbin included: ip and nft live there)."""
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin:/bin")
    if path is None:
        raise NetworkError(f"{name} is not installed (needed for the session network)")
    return path


def run(argv: list[str], *, stdin: str | None = None, check: bool = True) -> tuple[int, str, str]:
    """Runs ``argv`` to completion; returns (status, stdout, stderr)."""
    full = [tool_path(argv[0]), *argv[1:]]
    logger.debug("running %s", " ".join(full))
    try:
        proc = subprocess.run(full, input=stdin, capture_output=True, text=True,
                              timeout=TOOL_TIMEOUT, check=False)
    except subprocess.TimeoutExpired as exc:
        raise NetworkError(f"{argv[0]} did not finish within {TOOL_TIMEOUT:g}s") from exc
    except OSError as exc:
        raise NetworkError(f"cannot run {argv[0]}: {exc.strerror}") from exc
    if check and proc.returncode != 0:
        err = proc.stderr.strip()
        first = err.splitlines()[-1] if err else f"exit status {proc.returncode}"
        raise NetworkError(f"{argv[0]} failed: {first}", stderr=err)
    return proc.returncode, proc.stdout, proc.stderr


def in_netns(ns_pid: int, argv: list[str]) -> list[str]:
    """``argv`` run through nsenter in the network namespace of ``ns_pid``.

    A plain user must enter the sandbox's user namespace first (it owns the network
    namespace); root may enter the network namespace directly. The tool is named by
    its absolute path: a user's PATH on Debian has no /usr/sbin, where nft and ip live.
    """
    prefix = ["nsenter", f"--target={ns_pid}", "--net"]
    if os.geteuid() != 0:
        prefix += ["--user", "--preserve-credentials"]
    return [*prefix, tool_path(argv[0]), *argv[1:]]
