"""The ``coop`` console script: argument dispatch and error handling.

Start-up stays light: this module imports neither click nor any command. ``coop ls``
and ``coop ls --json`` run click-free (``coop_run.cli.fast``: click and its imports cost
about as much as starting Python); everything else goes through the click group in
``coop_run.cli.group``, which imports each command's module when it runs. Commands import
coop_build (and through it pydantic, requests, oras) only when they need it. Every
failure leaves through ``run()``, which prints one line and returns the seed's exit code
(11.7); tracebacks appear only with ``-v``. Shell completion (``_COOP_COMPLETE``, see the
README) is click's: with that variable set, even ``coop ls`` goes through click.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from coop_run.cli.app import App


def run(argv: Sequence[str] | None = None, app: App | None = None) -> int:
    """Run the CLI and return its exit code instead of exiting (for ``main`` and tests)."""
    from coop_run.cli import errors
    from coop_run.cli.fast import fast_command

    args = list(argv) if argv is not None else sys.argv[1:]
    app = app if app is not None else App()
    command = fast_command(args)
    try:
        if command is not None:
            return _run_fast(command, app)
        return _run_click(args, app)
    except KeyboardInterrupt:
        app.error("error: interrupted")
        return errors.EXIT_INTERRUPTED
    except Exception as exc:
        return _report(app, exc)


def _run_click(args: list[str], app: App) -> int:
    """``args`` through the click group; click's own errors become their exit codes."""
    import click

    from coop_run.cli import errors
    from coop_run.cli.group import cli

    try:
        result = cli.main(args=args, prog_name="coop", standalone_mode=False, obj=app)
    except click.ClickException as exc:
        exc.show(file=app.err)
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except SystemExit as exc:  # click answers a shell-completion request with sys.exit
        return exc.code if isinstance(exc.code, int) else errors.EXIT_ERROR
    except click.Abort as exc:
        if isinstance(exc.__context__, KeyboardInterrupt):
            app.error("error: interrupted")
            return errors.EXIT_INTERRUPTED
        app.error("error: aborted")
        return errors.EXIT_ERROR
    # In non-standalone mode click returns the exit code of --help/--version as an int.
    return result if isinstance(result, int) else errors.EXIT_OK


def _run_fast(command: Callable[[App], None], app: App) -> int:
    """A click-free command, ending as it would under click (``_run_click``)."""
    from coop_run.cli import errors

    try:
        command(app)
    except (EOFError, KeyboardInterrupt) as exc:
        print(file=sys.stderr, flush=True)  # click's blank line, closing the terminal's ^C
        if isinstance(exc, KeyboardInterrupt):
            app.error("error: interrupted")
            return errors.EXIT_INTERRUPTED
        app.error("error: aborted")
        return errors.EXIT_ERROR
    return errors.EXIT_OK


def _report(app: App, exc: Exception) -> int:
    """Print one line (plus detail) for ``exc`` and return its exit code."""
    from coop_build.errors import CoopBuildError
    from coop_run.cli import errors
    from coop_run.errors import CoopError

    if app.verbose:
        import traceback  # only here: it costs milliseconds on every start otherwise

        traceback.print_exception(exc, file=app.err)
    if isinstance(exc, BrokenPipeError):
        return errors.EXIT_ERROR
    if isinstance(exc, CoopBuildError | CoopError):
        for line in errors.describe_error(exc, app.environ):
            app.error(line)
        return errors.exit_code_for(exc)
    detail = str(exc) or type(exc).__name__
    hint = "" if app.verbose else " (run with -v for details)"
    app.error(f"error: unexpected {type(exc).__name__}: {detail}{hint}")
    return errors.EXIT_ERROR


def main() -> None:
    """Entry point of the ``coop`` console script."""
    _leave(run())


def _leave(code: int) -> NoReturn:
    """Exit without the interpreter's teardown, which frees every module one by one
    (pydantic's are many: about 40 ms of a one-step ``coop init``) and nothing of ours
    needs. The atexit handlers still run (logging's flush, a prestarted namespace
    helper's end, the terminal's restore) and stdout/stderr are flushed. While another
    thread runs, the normal exit instead: it waits for non-daemon threads."""
    import atexit
    import os

    threading = sys.modules.get("threading")
    if threading is not None and threading.active_count() > 1:
        sys.exit(code)
    atexit._run_exitfuncs()  # what the interpreter's own exit would run
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            code = code or 120  # Python's own exit status when the final flush fails
    os._exit(code)


if __name__ == "__main__":
    main()
