"""Fake host secrets for the ``image = "host"`` tests: an ssh host key and a sudoers.d
drop-in, planted under the host's /etc by root and removed afterwards (with the
directories made for them), so the masks over every kind of secret are proven even on a
machine without sshd or sudo. As a plain user nothing can be planted: the host's own
/etc/shadow is the case then.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

CONTENT = "coop-test-secret"


@dataclass(frozen=True)
class Planted:
    """What ``planted_secrets`` made: secret files (each holding ``token``) and dirs."""

    token: str
    files: tuple[Path, ...]
    dirs: tuple[Path, ...]


@contextlib.contextmanager
def planted_secrets() -> Iterator[Planted]:
    """As root: ``/etc/ssh/ssh_host_coop<id>_key`` (0600) and ``/etc/sudoers.d/coop<id>``
    (0440), each holding a token; nothing as a plain user."""
    token = f"{CONTENT}-{uuid.uuid4().hex}"
    if os.geteuid() != 0:
        yield Planted(token, (), ())
        return
    made_dirs: list[Path] = []
    files: list[Path] = []
    try:
        for directory, name, mode in (("/etc/ssh", f"ssh_host_coop{token[-8:]}_key", 0o600),
                                      ("/etc/sudoers.d", f"coop{token[-8:]}", 0o440)):
            parent = Path(directory)
            if not parent.exists():
                parent.mkdir(mode=0o755)
                made_dirs.append(parent)
            path = parent / name
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
            files.append(path)
            with os.fdopen(fd, "w") as out:
                out.write(token + "\n")
        yield Planted(token, tuple(files), (Path("/etc/sudoers.d"),))
    finally:
        for path in files:
            path.unlink(missing_ok=True)
        for parent in reversed(made_dirs):
            parent.rmdir()
