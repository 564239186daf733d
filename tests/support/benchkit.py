"""What the benchmark scripts (tests/bench) share: timing, running a tool that must
succeed, memory from /proc, and a program run on a fresh PTY as a terminal would."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path


def timed(action: Callable[[], object]) -> float:
    """Seconds ``action()`` took (``perf_counter``)."""
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def run(argv: list[str], env: dict[str, str], cwd: Path | None = None) -> str:
    """``argv``'s stdout; a failure ends the bench with its output (no stdin)."""
    proc = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, check=False,
                          stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise SystemExit(f"bench: {' '.join(argv[:4])} failed ({proc.returncode}):\n"
                         f"{proc.stdout}{proc.stderr}")
    return proc.stdout


def smaps(pid: int) -> dict[str, int]:
    """/proc/PID/smaps_rollup in KiB."""
    values = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, _, rest = line.partition(":")
        values[key] = int(rest.split()[0])
    return values


def memory_kib(pid: int) -> tuple[int, int, int]:
    """(RSS, PSS, USS: the pages only this process holds) in KiB."""
    values = smaps(pid)
    return values["Rss"], values["Pss"], values["Private_Clean"] + values["Private_Dirty"]


def run_on_pty(argv: list[str]) -> int:
    """Run ``argv`` in a session of its own on a new PTY (output left unread); its exit
    code."""
    master, slave = os.openpty()
    try:
        proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave,
                                start_new_session=True)
    finally:
        os.close(slave)
    try:
        return proc.wait()
    finally:
        os.close(master)
