"""``run()`` in-process: how each kind of failure leaves the CLI (one line, exit code)."""

from __future__ import annotations

import io
import logging
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
