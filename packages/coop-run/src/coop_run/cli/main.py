"""The ``coop`` console script: global options, command registration, error handling.

Start-up stays light: only click is imported here; each command imports coop_build (and
through it pydantic, requests, oras) when it runs. Every failure leaves through
``main()``, which prints one line and exits with the seed's code (11.7); tracebacks
appear only with ``-v``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import click

from coop_run import __version__
from coop_run.cli.app import App
from coop_run.cli.build import init_command, rebuild_command
from coop_run.cli.daemon import logs_command, shutdown_command
from coop_run.cli.ls import ls_command
from coop_run.cli.options import configure_logging, global_options
from coop_run.cli.session import (
    attach_command,
    default_session,
    kill_command,
    restart_command,
    shell_command,
)
from coop_run.cli.status import status_command

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(context_settings=CONTEXT_SETTINGS, invoke_without_command=True)
@click.option("-d", "--detach", is_flag=True, help="Create session but don't attach.")
@click.option("-w", "--workspace", type=click.Path(file_okay=False, path_type=Path),
              help="Workspace directory (default: cwd).")
@click.option("-n", "--name", help="Session name (default: derived from workspace basename).")
@global_options
@click.version_option(__version__, "--version", prog_name="coop", message="%(prog)s %(version)s")
@click.pass_context
def cli(ctx: click.Context, detach: bool, workspace: Path | None, name: str | None) -> int | None:
    """coop: run coding agents in rootless namespace sandboxes.

    Without a command: attach to the current workspace's session, creating it first.
    """
    app = ctx.ensure_object(App)
    configure_logging(app)
    if ctx.invoked_subcommand is None:
        return default_session(app, detach=detach, workspace=workspace, name=name)
    if detach or workspace is not None or name is not None:
        raise click.UsageError("-d, -w and -n apply to coop without a command")
    return None


cli.add_command(init_command)
cli.add_command(rebuild_command)
cli.add_command(status_command)
cli.add_command(ls_command)
cli.add_command(shutdown_command)
cli.add_command(logs_command)
cli.add_command(attach_command)
cli.add_command(shell_command)
cli.add_command(kill_command)
cli.add_command(restart_command)


def run(argv: Sequence[str] | None = None, app: App | None = None) -> int:
    """Run the CLI and return its exit code instead of exiting (for ``main`` and tests)."""
    from coop_run.cli import errors

    app = app if app is not None else App()
    try:
        result = cli.main(
            args=list(argv) if argv is not None else None,
            prog_name="coop",
            standalone_mode=False,
            obj=app,
        )
    except click.ClickException as exc:
        exc.show(file=app.err)
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.Abort as exc:
        if isinstance(exc.__context__, KeyboardInterrupt):
            app.error("error: interrupted")
            return errors.EXIT_INTERRUPTED
        app.error("error: aborted")
        return errors.EXIT_ERROR
    except KeyboardInterrupt:
        app.error("error: interrupted")
        return errors.EXIT_INTERRUPTED
    except Exception as exc:
        return _report(app, exc)
    # In non-standalone mode click returns the exit code of --help/--version as an int.
    return result if isinstance(result, int) else errors.EXIT_OK


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
    sys.exit(run())


if __name__ == "__main__":
    main()
