"""Small runtime files (pid file, session and network records): written whole or not at all.

Readers (a new daemon rediscovering sessions, ``reap_stale``) must never see half a
file, so each is written to a temporary name in the same directory and renamed over the
old one; mode 0600, since the directory may be shared with other tools. No ``fsync``:
these describe running processes, which a power loss ends anyway, and a session start
should not wait on the disk (the build store's records, which must survive, do).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def write_text_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` (temp file + rename, mode 0600)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, data: Any) -> None:
    """Replace ``path`` with ``data`` as JSON (see ``write_text_atomic``)."""
    write_text_atomic(path, json.dumps(data))
