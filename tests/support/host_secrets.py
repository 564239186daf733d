"""Fake host secrets for the ``image = "host"`` tests: an ssh host key and a sudoers.d
drop-in, planted under the host's /etc by root and removed afterwards (with the
directories made for them), so the masks over every kind of secret are proven even on a
machine without sshd or sudo. As a plain user nothing can be planted: the host's own
/etc/shadow is the case then. ``mask_probe`` is the check a build step and a sandbox
both run over them.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from coop_build.rootlayout import host_secrets

CONTENT = "coop-test-secret"


@dataclass(frozen=True)
class Planted:
    """What ``planted_secrets`` made: secret files, each holding ``token``."""

    token: str
    files: tuple[Path, ...]


@contextlib.contextmanager
def planted_secrets() -> Iterator[Planted]:
    """As root: ``/etc/ssh/ssh_host_coop<id>_key`` (0600) and ``/etc/sudoers.d/coop<id>``
    (0440), each holding a token; nothing as a plain user."""
    token = f"{CONTENT}-{uuid.uuid4().hex}"
    if os.geteuid() != 0:
        yield Planted(token, ())
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
        yield Planted(token, tuple(files))
    finally:
        for path in files:
            path.unlink(missing_ok=True)
        for parent in reversed(made_dirs):
            parent.rmdir()


def mask_probe(planted: Planted) -> tuple[str, list[str]]:
    """A shell script that prints, for each of the host's secrets, its size (a file) or
    entry count (a directory) and ``ro`` when it cannot be written, and the lines it
    prints when every mask holds. Checks first that the secrets coop masks include
    /etc/shadow and every file ``planted`` made."""
    secrets = host_secrets()
    files = [f"/{rel}" for rel, is_dir in secrets if not is_dir]
    dirs = [f"/{rel}" for rel, is_dir in secrets if is_dir]
    assert "/etc/shadow" in files
    assert all(str(p) in files or str(p.parent) in dirs for p in planted.files)
    script = "; ".join(
        [f"wc -c < {f} 2>&1; (echo x >> {f}) 2>/dev/null || echo ro" for f in files]
        + [f"ls -A {d} | wc -l; (touch {d}/x) 2>/dev/null || echo ro" for d in dirs])
    return script, ["0", "ro"] * (len(files) + len(dirs))
