"""The unprivileged test user: an account plus its own /etc/subuid and /etc/subgid range.

Root deliberately gets no range: as root coop must use the single-uid mapping.
Standard library only (``scripts/pytest-as-user`` calls this with /usr/bin/python3).
"""

from __future__ import annotations

import os
import pwd
import subprocess
from dataclasses import dataclass
from pathlib import Path

TEST_USER = "cooptest"
RANGE_START = 200_000
RANGE_COUNT = 65_536


class UserSetupError(Exception):
    """The test user could not be created or given its id range."""


@dataclass(frozen=True)
class TestUser:
    """The account and its subordinate id ranges (start, count)."""

    __test__ = False

    name: str
    uid: int
    gid: int
    home: Path
    subuid: tuple[int, int]
    subgid: tuple[int, int]


def parse_subid(text: str) -> list[tuple[str, int, int]]:
    """Entries ``(owner, start, count)`` of an /etc/subuid-style file; junk lines skipped."""
    entries = []
    for line in text.splitlines():
        parts = line.strip().split(":")
        if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
            entries.append((parts[0], int(parts[1]), int(parts[2])))
    return entries


def pick_range(entries: list[tuple[str, int, int]], count: int = RANGE_COUNT,
               start: int = RANGE_START) -> int:
    """The lowest start >= ``start`` whose ``count`` ids overlap no existing range."""
    candidate = start
    for _owner, first, size in sorted(entries, key=lambda e: e[1]):
        if first + size <= candidate:
            continue
        if first >= candidate + count:
            break
        candidate = first + size
    return candidate


def _ensure_range(path: Path, name: str, uid: int) -> tuple[int, int]:
    text = path.read_text() if path.exists() else ""
    entries = parse_subid(text)
    for owner, first, size in entries:
        if owner in (name, str(uid)) and size >= RANGE_COUNT:
            return first, size
    start = pick_range(entries)
    if text and not text.endswith("\n"):
        text += "\n"
    tmp = path.with_name(path.name + ".coop-tmp")
    tmp.write_text(f"{text}{name}:{start}:{RANGE_COUNT}\n")
    tmp.chmod(0o644)
    tmp.replace(path)
    return start, RANGE_COUNT


def ensure_test_user(name: str = TEST_USER, *, etc: Path = Path("/etc")) -> TestUser:
    """Creates ``name`` if missing and gives it a 65536-id subuid/subgid range; idempotent."""
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        if os.geteuid() != 0:
            raise UserSetupError(
                f"user {name} does not exist and only root can create it") from None
        proc = subprocess.run(["useradd", "--create-home", "--user-group", "--shell",
                               "/bin/bash", name], capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise UserSetupError(f"useradd {name} failed: {proc.stderr.strip()}") from None
        entry = pwd.getpwnam(name)
    ranges = []
    for file in ("subuid", "subgid"):
        path = etc / file
        if os.geteuid() == 0:
            ranges.append(_ensure_range(path, name, entry.pw_uid))
            continue
        found = [(s, c) for o, s, c in parse_subid(path.read_text() if path.exists() else "")
                 if o in (name, str(entry.pw_uid))]
        if not found:
            raise UserSetupError(f"{name} has no range in {path}; run as root to add one")
        ranges.append(found[0])
    return TestUser(name=name, uid=entry.pw_uid, gid=entry.pw_gid, home=Path(entry.pw_dir),
                    subuid=ranges[0], subgid=ranges[1])
