"""``coop-init``, the sandbox's PID 1: where the binary is, and a sealed in-memory copy
of it that the cloned child of ``sandbox.clone`` execs.

The binary is compiled from ``csrc/coop-init.c`` (and its generated ``initproto.h``) when
the package is built or installed (``hatch_build.py``). The child execs it by descriptor;
the copy is a sealed memfd, so ``/proc/1/exe`` inside names that copy and nothing inside
can ever write to the installed file through it. Every sandbox a process starts execs
the same memfd, so its pages are shared by all of them.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from coop_run.errors import SandboxError
from coop_run.sandbox.initproto import C_HEADER
from coop_run.sandbox.keptfd import KeptFd

BINARY = Path(__file__).parents[1] / "_bin" / "coop-init"  # coop_run/_bin (hatch_build.py)
SOURCE = Path(__file__).parents[3] / "csrc" / "coop-init.c"  # present in a checkout
_MFD_EXEC = 0x10  # Linux 6.3+: executable even where vm.memfd_noexec says otherwise
_SEALS = fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE
_REINSTALL = "reinstall coop-run (uv sync --reinstall-package coop-run; it needs gcc and libc6-dev)"


def exe_fd() -> int:
    """A close-on-exec descriptor of ``coop-init`` to exec; made once per process (and
    again in a fork that closed or reused it: ``KeptFd``)."""
    return _exe.get()


def _read_binary() -> bytes:
    try:
        data = BINARY.read_bytes()
        built = BINARY.stat().st_mtime
    except OSError as exc:
        raise SandboxError(f"coop's sandbox init {BINARY} is missing ({exc.strerror}): "
                           f"{_REINSTALL}") from exc
    for source in (SOURCE, SOURCE.with_name(C_HEADER)):
        try:
            changed = source.stat().st_mtime
        except OSError:
            continue
        if changed > built:
            raise SandboxError(f"coop's sandbox init {BINARY} is older than {source.name}: "
                               f"{_REINSTALL}")
    return data


def _sealed_copy(data: bytes) -> int:
    flags = os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING
    try:
        fd = os.memfd_create("coop-init", flags | _MFD_EXEC)
    except OSError:  # EINVAL before Linux 6.3
        fd = os.memfd_create("coop-init", flags)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _SEALS)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _make() -> int:
    return _sealed_copy(_read_binary())


_exe = KeptFd(_make)
