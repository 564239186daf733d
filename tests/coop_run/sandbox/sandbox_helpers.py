"""Running a command inside a real sandbox and reading all it prints (sandbox and escape
tests)."""

from __future__ import annotations

import os
import select
import time
from collections.abc import Sequence

from coop_run.sandbox.host import Sandbox

TIMEOUT = 10.0
SH = ("sh",)


def run(sandbox: Sandbox, script: str, *, env: dict[str, str] | None = None,
        shell: Sequence[str] = SH) -> tuple[int, str]:
    """``shell -c script`` inside, as the agent would run it; (returncode, stdout+stderr)."""
    r, w = os.pipe()
    null = os.open(os.devnull, os.O_RDONLY)
    try:
        proc = sandbox.spawn([*shell, "-c", script], stdio=(null, w, w), env=env)
    finally:
        os.close(w)
        os.close(null)
    try:
        out = read_until_eof(r)
    finally:
        os.close(r)
    return sandbox.wait(proc.pid, TIMEOUT).returncode, out


def read_until_eof(fd: int, timeout: float = TIMEOUT) -> str:
    """All that comes from ``fd`` until end of file (or EIO: a PTY's last slave closed)."""
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
            raise AssertionError(f"no end of output after {timeout}s: {b''.join(chunks)!r}")
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the PTY's last slave closed
            chunk = b""
        if not chunk:
            return b"".join(chunks).decode(errors="replace")
        chunks.append(chunk)


def ok(sandbox: Sandbox, script: str, *, shell: Sequence[str] = SH) -> str:
    """Like ``run``; fails the test unless the script exits 0. Its output."""
    code, out = run(sandbox, script, shell=shell)
    assert code == 0, out
    return out
