"""The ctypes syscall wrappers, exercised in a forked child with its own namespaces."""

from __future__ import annotations

import errno
import json
import os
import traceback
from collections.abc import Callable
from pathlib import Path

import pytest

from coop_build import linux
from coop_build.idmap import IdMap, write_idmap


def in_child(body: Callable[[], object]) -> object:
    """Run ``body`` in a forked child (namespaces must not touch the test process)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        try:
            result: object = {"ok": body()}
        except BaseException as exc:
            result = {"error": f"{type(exc).__name__}: {exc}", "tb": traceback.format_exc()}
        os.write(write, json.dumps(result).encode())
        os._exit(0)
    os.close(write)
    chunks = []
    while chunk := os.read(read, 65536):
        chunks.append(chunk)
    os.close(read)
    os.waitpid(pid, 0)
    answer = json.loads(b"".join(chunks))
    if "error" in answer:
        raise AssertionError(answer["tb"])
    return answer["ok"]


def test_flag_values_match_the_kernel() -> None:
    assert linux.CLONE_NEWUSER == 0x10000000 and linux.CLONE_NEWNS == 0x20000
    assert linux.MS_BIND | linux.MS_REC == 0x5000
    assert linux.MS_PRIVATE == 0x40000 and linux.MNT_DETACH == 2


def test_errors_name_the_call_and_path(tmp_path: Path) -> None:
    with pytest.raises(OSError) as info:
        linux.umount2(tmp_path / "not-mounted")
    assert info.value.errno in (errno.EINVAL, errno.EPERM, errno.ENOENT)
    assert f"umount2({tmp_path}/not-mounted)" in str(info.value)
    with pytest.raises(OSError) as info:
        linux.unshare(0x1)  # not a namespace flag
    assert info.value.errno == errno.EINVAL
    assert "unshare(0x1)" in str(info.value)
    with pytest.raises(OSError, match=r"pivot_root\(/nonexistent-a, /nonexistent-b\)"):
        linux.pivot_root("/nonexistent-a", "/nonexistent-b")
    with pytest.raises(OSError, match="setns"):
        linux.setns(-1, 0)


def test_namespaces_mounts_and_hostname(tmp_path: Path) -> None:
    """unshare, sethostname, tmpfs and read-only bind mounts inside a user namespace."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "file").write_text("hello")
    target = tmp_path / "target"
    target.mkdir()
    scratch = tmp_path / "scratch"
    scratch.mkdir()

    def body() -> dict[str, object]:
        uid, gid = os.getuid(), os.getgid()
        linux.unshare(linux.CLONE_NEWUSER | linux.CLONE_NEWNS | linux.CLONE_NEWUTS)
        write_idmap(os.getpid(), IdMap.single(uid, gid))
        linux.mount(None, "/", None, linux.MS_REC | linux.MS_PRIVATE)
        linux.sethostname("coop-linux-test")
        linux.mount("tmpfs", scratch, "tmpfs", linux.MS_NOSUID, "mode=0755")
        (scratch / "in-tmpfs").write_text("x")
        linux.bind_mount(src, target, readonly=True)
        try:
            (target / "new").write_text("no")
            writable = True
        except OSError as exc:
            writable = exc.errno != errno.EROFS
        content = (target / "file").read_text()
        linux.umount2(target, linux.MNT_DETACH)
        return {"host": os.uname().nodename, "writable": writable, "content": content,
                "after": sorted(os.listdir(target))}

    got = in_child(body)
    assert got == {"host": "coop-linux-test", "writable": False, "content": "hello",
                   "after": []}
    assert os.uname().nodename != "coop-linux-test"
    assert os.listdir(scratch) == []  # the tmpfs lived only in the child's namespace


def test_pdeathsig_and_mount_flags(tmp_path: Path) -> None:
    def body() -> int:
        linux.set_pdeathsig(9)
        return linux.mount_flags_of("/proc") & linux.MS_NOSUID

    assert in_child(body) in (0, linux.MS_NOSUID)
