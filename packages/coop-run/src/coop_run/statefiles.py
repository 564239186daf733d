"""Small runtime files (pid file, session and network records) written whole or not at
all, and the lock files that serialise their writers.

Readers (a new daemon rediscovering sessions, ``reap_stale``) must never see half a
file, so each is written to a temporary name in the same directory and renamed over the
old one; mode 0600, since the directory may be shared with other tools. No ``fsync``:
these describe running processes, which a power loss ends anyway, and a session start
should not wait on the disk (the build store's records, which must survive, do).
"""

from __future__ import annotations

import _thread
import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def write_text_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` (temp file + rename, mode 0600)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{_thread.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read_json(path: Path, *, strict: bool = False) -> dict[str, Any] | None:
    """A record written by ``write_json_atomic``: None if absent, unreadable or not an
    object (a record is replaced whole, so a reader sees the old one or the new one).
    ``strict``: only a missing or malformed record is None; another ``OSError`` (EACCES,
    EIO) is raised, for a caller that would otherwise overwrite what it could not read."""
    try:
        value = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except OSError:
        if strict:
            raise
        return None
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def write_json_atomic(path: Path, data: Any) -> None:
    """Replace ``path`` with ``data`` as JSON (see ``write_text_atomic``)."""
    write_text_atomic(path, json.dumps(data))


@contextlib.contextmanager
def locked(path: Path, *, wait: bool = True, make_dir: bool = False) -> Iterator[bool]:
    """Hold ``flock`` on the lock file ``path`` (created 0600; ``make_dir``: its directory
    too). With ``wait=False`` it yields False instead of waiting when somebody holds it,
    or when the directory is gone (its holder removed it: nothing is left to guard).

    A holder may remove the lock file, and its directory, when it removes what the lock
    guards: a waiter then holds a lock nobody else can see, so it locks the file now at
    ``path`` instead, until the one it holds is that one.
    """
    while True:
        if make_dir:
            path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except FileNotFoundError:
            if wait:
                raise
            yield False
            return
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            if _is_at(fd, path):
                yield True
                return
        finally:
            os.close(fd)  # releases the lock


def _is_at(fd: int, path: Path) -> bool:
    try:
        there = path.stat()
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (there.st_dev, there.st_ino) == (held.st_dev, held.st_ino)
