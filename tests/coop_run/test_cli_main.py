"""``run()`` in-process: how each kind of failure leaves the CLI (one line, exit code)."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
from collections.abc import Iterator

import click
import pytest

from coop_build.errors import CoopfileError, RootfsNotBuiltError
from coop_run.cli.app import App
from coop_run.cli.group import cli
from coop_run.cli.main import run


@pytest.fixture
def boom() -> Iterator[list[BaseException]]:
    """A temporary ``coop boom`` command raising whatever the test puts in the list."""
    to_raise: list[BaseException] = []

    @click.command("boom")
    def boom_command() -> None:
        raise to_raise[0]

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    cli.add_command(boom_command)
    try:
        yield to_raise
    finally:
        cli.commands.pop("boom")
        root.handlers[:] = handlers
        root.setLevel(level)


def call(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = run(list(argv), App(out=out, err=err, environ={"HOME": "/nonexistent"}))
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize(
    ("exc", "code", "line"),
    [
        (RuntimeError("disk on fire"), 1, "error: unexpected RuntimeError: disk on fire"),
        (CoopfileError("coop.toml: [x]: unknown table"), 2,
         "error: coop.toml: [x]: unknown table"),
        (RootfsNotBuiltError("no rootfs for ~/w: run coop init"), 5,
         "error: no rootfs for ~/w: run coop init"),
        (KeyboardInterrupt(), 130, "error: interrupted"),
    ],
)
def test_failures_are_one_line_with_the_seed_exit_code(
    boom: list[BaseException], exc: BaseException, code: int, line: str
) -> None:
    boom.append(exc)
    rc, out, err = call("boom")
    assert rc == code
    assert out == ""
    assert err.splitlines()[-1].startswith(line), err
    assert "Traceback" not in err
    assert len([x for x in err.splitlines() if x.startswith("error:")]) == 1


def test_verbose_adds_the_traceback(boom: list[BaseException]) -> None:
    boom.append(RuntimeError("disk on fire"))
    rc, _, err = call("-v", "boom")
    assert rc == 1
    assert "Traceback (most recent call last)" in err
    assert err.splitlines()[-1] == "error: unexpected RuntimeError: disk on fire"


def test_help_and_version_exit_0_in_process() -> None:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        assert call("--version")[0] == 0
        assert call("-h")[0] == 0
        assert call("status", "--bogus")[0] == 2
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def _leaving(code: str) -> list[str]:
    """A Python child that runs ``code`` and then leaves as the console script does."""
    return [sys.executable, "-c", f"from coop_run.cli.main import _leave\n{code}"]


def test_leave_runs_atexit_flushes_and_keeps_the_exit_code() -> None:
    child = subprocess.run(
        _leaving("import atexit, sys\n"
                 "atexit.register(lambda: print('atexit ran'))\n"
                 "print('buffered', end='')\n"
                 "sys.stderr.write('err')\n"
                 "_leave(3)"),
        capture_output=True, text=True, timeout=60, check=False)
    assert (child.returncode, child.stdout, child.stderr) == (3, "bufferedatexit ran\n", "err")


def test_leave_reports_a_failed_final_flush_as_120() -> None:
    buffered = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    proc = subprocess.Popen(
        _leaving("import sys\nprint('lost')\nsys.stdin.read()\n_leave(0)"),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=buffered)
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdout.close()  # the reader goes away before the child's final flush
    proc.stdin.close()
    assert proc.wait(timeout=60) == 120


def test_leave_waits_for_running_threads() -> None:
    """A thread still working when the script ends gets the normal exit, which waits."""
    proc = subprocess.Popen(
        _leaving("import sys, threading\n"
                 "def late() -> None:\n"
                 "    sys.stdin.read()\n"
                 "    print('thread ended', flush=True)\n"
                 "threading.Thread(target=late).start()\n"
                 "print('leaving', flush=True)\n"
                 "_leave(4)"),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdin is not None and proc.stdout is not None
    assert proc.stdout.readline() == "leaving\n"  # _leave runs now; the thread still waits
    with pytest.raises(subprocess.TimeoutExpired):
        proc.wait(timeout=2)  # a fast exit would have ended it, thread and all
    proc.stdin.close()
    assert proc.stdout.read() == "thread ended\n"
    proc.stdout.close()
    assert proc.wait(timeout=60) == 4
