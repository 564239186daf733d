"""Start-up of the CLI: commands imported lazily, ``coop ls`` without click, same output.

Issue 4 benchmarks ``coop ls`` against ``python3 -c pass``; these tests pin what makes it
cheap (which modules a run imports) and that the shortcuts print what click printed.
"""

from __future__ import annotations

import ast
import io
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
from coop_cli import COOP, coop_environ, stop_started

from coop_run.cli import fast
from coop_run.cli.app import App
from coop_run.cli.group import COMMANDS, cli
from coop_run.cli.main import run

# Never on the path of ``coop ls``: the daemon's and the builder's stacks, and click.
LS_FORBIDDEN = ("asyncio", "pydantic", "aiohttp", "aiortc", "requests", "oras", "urllib3",
                "click", "dataclasses", "inspect")
SEED_HEADER = "SESSION    WORKSPACE                STATE     PTYS   CLIENTS        AGE"


def imported_by(args: list[str], env: dict[str, str], cwd: Path) -> tuple[set[str], str]:
    """The modules ``python -X importtime <coop> ARGS`` imports, and its stdout."""
    proc = subprocess.run([sys.executable, "-X", "importtime", str(COOP), *args], cwd=cwd,
                          env=env, capture_output=True, text=True, check=False, timeout=60,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-2000:]
    modules = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines()
               if line.startswith("import time:")}
    assert "coop_run.cli.main" in modules  # the measurement itself works
    return modules, proc.stdout


def top_packages(modules: set[str], names: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in names)


@pytest.fixture
def daemon_env(coop_env: Any) -> Iterator[dict[str, str]]:
    """The environment of the test's ``coop`` runs; every daemon they start is stopped."""
    yield coop_environ(coop_env)
    stop_started(coop_env.coop_home, timeout=5.0)


def test_ls_runs_without_click_or_the_heavy_stacks(daemon_env: dict[str, str],
                                                   tmp_path: Path) -> None:
    first = subprocess.run([str(COOP), "ls"], cwd=tmp_path, env=daemon_env,
                           capture_output=True, text=True, check=False, timeout=60)
    assert first.returncode == 0, first.stderr  # this one started the daemon
    for args in (["ls"], ["ls", "--json"]):
        modules, _ = imported_by(args, daemon_env, tmp_path)
        assert "coop_run.ipc.client" in modules, args  # it did talk to the daemon
        assert top_packages(modules, LS_FORBIDDEN) == [], args
        assert not any(m.startswith("coop_run.cli.") and m not in (
            "coop_run.cli.main", "coop_run.cli.app", "coop_run.cli.options",
            "coop_run.cli.fast", "coop_run.cli.errors", "coop_run.cli.formatting")
            for m in modules), sorted(modules)


def test_ls_prints_what_the_click_command_prints(daemon_env: dict[str, str],
                                                 tmp_path: Path) -> None:
    def coop(*args: str) -> str:
        proc = subprocess.run([str(COOP), *args], cwd=tmp_path, env=daemon_env,
                              capture_output=True, text=True, check=False, timeout=60)
        assert (proc.returncode, proc.stderr) == (0, ""), (args, proc)
        return proc.stdout

    assert coop("ls") == SEED_HEADER + "\n"
    # "-q" is not a fast spelling: this goes through click and the ls command.
    assert coop("-q", "ls") == coop("ls")
    assert coop("ls", "--json") == "[]\n" == coop("ls", "--json", "-q")
    modules, out = imported_by(["-q", "ls"], daemon_env, tmp_path)
    assert "coop_run.cli.ls" in modules and "click" in modules  # the other path indeed
    assert out == SEED_HEADER + "\n"


def test_a_command_imports_its_own_module_only(coop_env: Any, tmp_path: Path) -> None:
    env = coop_environ(coop_env)
    modules, _ = imported_by(["status"], env, tmp_path)
    assert "coop_run.cli.status" in modules
    others = {"coop_run.cli.build", "coop_run.cli.session", "coop_run.cli.daemon",
              "coop_run.cli.ls", "coop_run.cli.attach", "coop_run.cli.progress"}
    assert sorted(others & modules) == []
    modules, _ = imported_by(["logs"], env, tmp_path)
    assert "coop_run.cli.daemon" in modules
    assert sorted((others - {"coop_run.cli.daemon"}) & modules) == []


def test_importing_the_entry_point_imports_no_command_nor_click() -> None:
    code = ("import sys, coop_run.cli.main; "
            "print(sorted(m for m in sys.modules if m.startswith(('click', 'coop_run.cli.'))))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, timeout=60)
    assert proc.stdout.strip() == str(sorted(["coop_run.cli.app", "coop_run.cli.main"]))


def test_the_daemon_imports_no_session_stack_until_a_create() -> None:
    """A cold command waits for the daemon's imports: the supervisor, sandbox and
    network code (about 45 ms) comes with the first create, the session starter runs it.
    Of the sandbox and session packages the daemon holds only what crosses the process
    line: the two configurations, the launch protocol and what they name."""
    code = ("import sys, coop_run.daemon.main; "
            "print(sorted(m for m in sys.modules if m.startswith(('coop_', 'pydantic'))))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, timeout=60)
    modules = set(ast.literal_eval(proc.stdout.strip()))
    assert {"coop_run.daemon.main", "coop_run.daemon.server", "coop_run.daemon.registry",
            "coop_run.daemon.zygote_client"} <= modules
    crossing = {"coop_run.sandbox", "coop_run.sandbox.config", "coop_run.sandbox.network",
                "coop_run.sandbox.network.base", "coop_run.session", "coop_run.session.config",
                "coop_run.session.launch"}
    stack = {m for m in modules if m.startswith(("coop_run.sandbox", "coop_run.session"))}
    assert stack == crossing
    assert sorted(m for m in modules if m == "pydantic" or m.startswith(
        ("pydantic.", "coop_build.layers", "coop_build.store"))) == []
    # the web server is loaded when one starts (daemon.extensions), not before
    assert "coop_run.daemon.extensions" in modules
    assert top_packages(modules, ("aiohttp", "yarl", "multidict", "qrcode")) == []
    assert sorted(m for m in modules if m.startswith("coop_run.web")) == []


def test_coop_serve_runs_without_aiohttp(coop_env: Any, tmp_path: Path) -> None:
    """The command prints links and a QR code; the server's stack is the daemon's."""
    modules, out = imported_by(["serve", "--stop"], coop_environ(coop_env), tmp_path)
    assert "coop_run.cli.serve" in modules and out == "no web server is running\n"
    assert top_packages(modules, ("aiohttp", "asyncio", "pydantic")) == []


def test_help_lists_every_command_as_an_eager_group_would(
        capsys: pytest.CaptureFixture[str]) -> None:
    eager = click.Group(name="coop", params=cli.params, callback=cli.callback,
                        help=cli.help, invoke_without_command=True,
                        context_settings=cli.context_settings)
    for name, target in COMMANDS.items():
        module, _, attribute = target.partition(":")
        __import__(module)
        eager.add_command(getattr(sys.modules[module], attribute), name)
    with eager.make_context("coop", [], resilient_parsing=True) as ctx:
        expected = eager.get_help(ctx)
    assert call("--help") == (0, "", "")
    out = capsys.readouterr().out  # click prints help on sys.stdout
    assert out == expected + "\n"
    listing = out.split("Commands:\n", 1)[1].splitlines()
    assert [line.split()[0] for line in listing] == sorted(COMMANDS)


def test_a_mistyped_command_gets_a_suggestion() -> None:
    code, out, err = call("lss")
    assert (code, out) == (2, "")
    assert err.endswith("Error: No such command 'lss'. Did you mean 'ls'?\n"), err
    code, _, err = call("shutdwn")
    assert code == 2 and "Did you mean 'shutdown'?" in err, err


def test_fast_paths_are_the_exact_spellings_only(monkeypatch: pytest.MonkeyPatch) -> None:
    assert fast.fast_command(["ls"]) is not None
    assert fast.fast_command(["ls", "--json"]) is not None
    for args in (["-q", "ls"], ["ls", "-v"], ["ls", "--help"], ["--json", "ls"], ["lss"], []):
        assert fast.fast_command(args) is None, args
    monkeypatch.setenv(fast.COMPLETE_VAR, "bash_complete")
    assert fast.fast_command(["ls"]) is None  # click's shell completion answers that


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("stream", [io.StringIO, Terminal])
def test_echo_writes_what_click_echo_writes(stream: type[io.StringIO]) -> None:
    text = "SESSION  WORKSPACE\nweb  ~/\x1b[31mred\x1b[0m/dir\x1b[2Jx"
    ours, theirs = stream(), stream()
    fast.echo(App(out=ours), text)
    click.echo(text, file=theirs)
    assert ours.getvalue() == theirs.getvalue()
    assert ("\x1b" in ours.getvalue()) is (stream is Terminal)


@pytest.mark.parametrize(("exc", "code", "line"), [
    (KeyboardInterrupt(), 130, "error: interrupted\n"),
    (EOFError(), 1, "error: aborted\n"),
    (RuntimeError("boom"), 1, "error: unexpected RuntimeError: boom (run with -v for details)\n"),
])
def test_a_fast_command_fails_as_under_click(monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str],
                                             exc: BaseException, code: int, line: str) -> None:
    def boom(app: App) -> None:
        raise exc

    @click.command("boom")
    def boom_command() -> None:
        raise exc

    monkeypatch.setitem(cli.commands, "boom", boom_command)
    under_click = call("boom"), capsys.readouterr().err
    monkeypatch.setitem(fast.FAST, ("boom",), boom)  # type: ignore[index]
    assert fast.fast_command(["boom"]) is boom
    assert (call("boom"), capsys.readouterr().err) == under_click
    # click answers Ctrl+C and Ctrl+D with a blank line on the real stderr first
    blank = "\n" if isinstance(exc, (KeyboardInterrupt, EOFError)) else ""
    assert under_click == ((code, "", line), blank)


def call(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = run(list(argv), App(out=out, err=err, environ=dict(os.environ)))
    return code, out.getvalue(), err.getvalue()
