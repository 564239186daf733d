"""coop's own subordinate id range, for the sandboxes and builds root starts.

A namespace whose uid 0 is host uid 0 gives whatever runs in it host root's file powers
over every root-owned file that reaches it. So when coop runs as root, inside ids
0..65535 map to a range of unprivileged host ids reserved for coop, the way podman
reserves one for its rootful containers (its ``containers`` entry): the entry of the name
``coop`` in ``/etc/subuid`` and ``/etc/subgid``. When a file has none, root takes the
first 65536-aligned block of 65536 ids at or above 2**30 that no entry of either file
overlaps (and that its own user namespace can name), and appends ``coop:START:65536``
under an exclusive ``flock`` of the files, so two coop processes never reserve twice.

Everything above the "I/O" marker is pure.
"""

from __future__ import annotations

import contextlib
import fcntl
import grp
import logging
import os
import pwd
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from coop_build.errors import NamespaceError

logger = logging.getLogger(__name__)

NAME = "coop"
BLOCK = 1 << 16   # ids 0..65535 inside: what images expect (nobody is 65534)
FLOOR = 1 << 30   # far above the ranges useradd hands out (100000 upwards)
ID_LIMIT = (1 << 32) - 1  # (uid_t)-1 is no id
Range = tuple[int, int]   # (start, count)


def parse_entries(text: str) -> list[tuple[str, int, int]]:
    """Every well-formed ``NAME:START:COUNT`` line of ``/etc/subuid``-format ``text``
    (comments, blank and malformed lines are skipped: other tools' business)."""
    entries: list[tuple[str, int, int]] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split(":")
        if len(fields) == 3 and fields[1].isdigit() and fields[2].isdigit():
            entries.append((fields[0], int(fields[1]), int(fields[2])))
    return entries


def own_range(entries: Iterable[tuple[str, int, int]], name: str = NAME) -> Range | None:
    """The first non-empty range of ``name``, if it has one."""
    return next(((start, count) for who, start, count in entries if who == name and count),
                None)


def overlaps(a: Range, b: Range) -> bool:
    return a[0] < b[0] + b[1] and b[0] < a[0] + a[1]


def pick_block(taken: Iterable[Range], *, allowed: Sequence[Range] = ((0, ID_LIMIT),),
               size: int = BLOCK, floor: int = FLOOR) -> int | None:
    """The start of the first ``size``-aligned block of ``size`` ids at or above ``floor``
    that overlaps none of ``taken`` and lies inside one of ``allowed`` (the ids this user
    namespace can name); None when there is none."""
    busy = sorted(r for r in taken if r[1] > 0)
    start = -(-floor // size) * size
    while start + size <= ID_LIMIT:
        block = (start, size)
        clash = [s + n for s, n in busy if overlaps(block, (s, n))]
        if clash:
            start = -(-max(clash) // size) * size
            continue
        if any(s <= start and start + size <= s + n for s, n in allowed):
            return start
        start += size
    return None


def range_refusal(own: Range, entries: Iterable[tuple[str, int, int]],
                  accounts: Iterable[int], *, name: str = NAME) -> str | None:
    """Why ``own`` (the range of ``name``) must not be used for root's sandboxes, or None:
    it would hold host root, hold fewer ids than images expect, or share ids with another
    entry or an account (whose owner could then act with the sandboxes' ids)."""
    start, count = own
    if start == 0:
        return "it starts at 0 (host root)"
    if count < BLOCK:
        return f"it holds {count} ids, fewer than the {BLOCK} a sandbox maps"
    mine = (start, BLOCK)
    for who, s, n in entries:
        if who != name and n and overlaps(mine, (s, n)):
            return f"it overlaps {who}'s range {s}:{n}"
    clash = next((uid for uid in accounts if start <= uid < start + BLOCK), None)
    if clash is not None:
        return f"it holds uid {clash}, an account of this machine"
    return None


def entry_line(start: int, existing: str, size: int = BLOCK) -> str:
    """What to append to a file holding ``existing`` for coop's entry at ``start``."""
    lead = "\n" if existing and not existing.endswith("\n") else ""
    return f"{lead}{NAME}:{start}:{size}\n"


def parse_id_map(text: str) -> list[Range]:
    """The ids a user namespace can name, from its ``/proc/PID/uid_map`` text."""
    extents: list[Range] = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) == 3 and all(f.isdigit() for f in fields):
            extents.append((int(fields[0]), int(fields[2])))
    return extents


# --- I/O -------------------------------------------------------------------------------


def coop_ranges(subuid: Path, subgid: Path, *, reserve: bool = True) -> tuple[Range, Range]:
    """coop's (uid range, gid range), reserved first when a file has no entry for it
    (``reserve``; root's business: the files are root's). NamespaceError when there is
    no range and none can be reserved."""
    _no_such_user()
    uids, gids = _read_own(subuid), _read_own(subgid)
    if uids is None or gids is None:
        if not reserve:
            raise NamespaceError(f"no {NAME!r} entry in {subuid} and {subgid}")
        uids, gids = _reserve(subuid, subgid)
    for path, own, ids in ((subuid, uids, _account_ids(uid=True)),
                           (subgid, gids, _account_ids(uid=False))):
        refusal = range_refusal(own, _entries(path), ids)
        if refusal is not None:
            raise NamespaceError(f"{path}: the {NAME!r} entry {own[0]}:{own[1]} cannot hold "
                                 f"root's sandboxes: {refusal}")
    return uids, gids


def _no_such_user() -> None:
    """shadow's newuidmap gives a user the ranges filed under its name: a login named
    ``coop`` could then act with the ids of root's sandboxes (and their workspaces)."""
    try:
        pwd.getpwnam(NAME)
    except KeyError:
        return
    raise NamespaceError(f"a user named {NAME!r} exists on this machine: its subordinate ids "
                         "would be those of root's sandboxes; rename that user")


def _account_ids(*, uid: bool) -> list[int]:
    if uid:
        return [entry.pw_uid for entry in pwd.getpwall()]
    return [entry.gr_gid for entry in grp.getgrall()]


def _entries(path: Path) -> list[tuple[str, int, int]]:
    try:
        return parse_entries(path.read_text())
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise NamespaceError(f"cannot read {path}: {exc.strerror}") from exc


def _read_own(path: Path) -> Range | None:
    return own_range(_entries(path))


def _reserve(subuid: Path, subgid: Path) -> tuple[Range, Range]:
    try:
        with _locked(subuid) as uid_fd, _locked(subgid) as gid_fd:
            texts = (_read_fd(uid_fd), _read_fd(gid_fd))
            taken = [(s, n) for text in texts for _, s, n in parse_entries(text)]
            have = [own_range(parse_entries(text)) for text in texts]
            start = _free_start(taken, subuid, subgid) if None in have else 0
            result = [own if own is not None else _append(fd, text, path, start)
                      for fd, text, path, own in zip((uid_fd, gid_fd), texts,
                                                     (subuid, subgid), have, strict=True)]
    except OSError as exc:
        raise NamespaceError(f"cannot reserve an id range for coop's sandboxes in "
                             f"{exc.filename or subuid}: {exc.strerror}") from exc
    return result[0], result[1]


def _free_start(taken: list[Range], subuid: Path, subgid: Path) -> int:
    start = pick_block(taken, allowed=_nameable())
    if start is None:
        raise NamespaceError(f"no free block of {BLOCK} ids at or above {FLOOR} for coop's "
                             f"sandboxes in {subuid} and {subgid}")
    return start


def _append(fd: int, text: str, path: Path, start: int) -> Range:
    """coop's entry at ``start``, appended to the locked file (one write: O_APPEND)."""
    os.write(fd, entry_line(start, text).encode())
    os.fsync(fd)
    logger.info("reserved ids %d-%d for coop's sandboxes in %s", start, start + BLOCK - 1,
                path)
    return (start, BLOCK)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[int]:
    """``path`` opened for appending, created 0644 if missing, under an exclusive flock;
    reopened if it was replaced (a rename by another tool) while we waited."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if os.fstat(fd).st_ino == path.stat().st_ino:
                break
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
    try:
        yield fd
    finally:
        os.close(fd)


def _read_fd(fd: int) -> str:
    chunks = []
    offset = 0
    while chunk := os.pread(fd, 65536, offset):
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks).decode("utf-8", "replace")


def _nameable() -> list[Range]:
    """The ids our own user namespace maps (all of them in the initial one)."""
    try:
        extents = parse_id_map(Path("/proc/self/uid_map").read_text())
    except OSError:
        extents = []
    return extents or [(0, ID_LIMIT)]
