"""Acting as another uid (the test user ``cooptest``) from a root test, through a fork."""

from __future__ import annotations

import os
import pwd
from collections.abc import Callable

from support.require import require


def cooptest_user() -> pwd.struct_passwd:
    """The unprivileged test user; the test is skipped where it does not exist (failed
    in CI)."""
    try:
        return pwd.getpwnam("cooptest")
    except KeyError:
        require(False, "user cooptest does not exist (scripts/pytest-as-user creates it)")
        raise  # not reached: require(False, ...) skips or fails


def as_other_user(user: pwd.struct_passwd, action: Callable[[], bytes]) -> str:
    """Run ``action`` in a child that has become ``user``; what it returned, decoded.

    A failure inside comes back as ``error: <exception>`` and a non-zero exit, which fails
    the test here.
    """
    read_fd, write_fd = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the other user's process
        code = 2
        try:
            os.close(read_fd)
            os.setgroups([])
            os.setgid(user.pw_gid)
            os.setuid(user.pw_uid)
            os.write(write_fd, action())
            code = 0
        except BaseException as exc:
            os.write(write_fd, f"error: {exc!r}".encode())
        finally:
            os._exit(code)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        verdict = pipe.read().decode()
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0, verdict
    return verdict
