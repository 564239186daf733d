"""The root ``coop`` group: global options, and the commands by name, imported lazily.

``LazyGroup`` imports a command's module only when that command is looked up, so
``coop status`` loads neither the build nor the session commands. ``coop ls`` does not
come here at all (``coop_run.cli.fast``); ``--help`` and a mistyped command import every
command module, for the listing and click's "Did you mean" (rare paths).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click

from coop_run import __version__
from coop_run.cli.app import App
from coop_run.cli.options import configure_logging, global_options

# Command name -> "module:attribute" of its click command, imported on first use.
COMMANDS: Mapping[str, str] = {
    "init": "coop_run.cli.build:init_command",
    "rebuild": "coop_run.cli.build:rebuild_command",
    "status": "coop_run.cli.status:status_command",
    "ls": "coop_run.cli.ls:ls_command",
    "shutdown": "coop_run.cli.daemon:shutdown_command",
    "logs": "coop_run.cli.daemon:logs_command",
    "attach": "coop_run.cli.session:attach_command",
    "shell": "coop_run.cli.session:shell_command",
    "kill": "coop_run.cli.session:kill_command",
    "restart": "coop_run.cli.session:restart_command",
    "trust": "coop_run.cli.trust:trust_command",
    "serve": "coop_run.cli.serve:serve_command",
}


class LazyGroup(click.Group):
    """A group whose commands are named up front and imported only when looked up.

    Running a command imports its module alone; ``--help`` and click's "Did you mean"
    look up every name, so they import them all (rare paths, output as with eager
    registration). Commands added with ``add_command`` work as in any group.
    """

    def __init__(self, *args: Any, lazy_commands: Mapping[str, str] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy_commands: dict[str, str] = dict(lazy_commands or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *self.lazy_commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = self.commands.get(cmd_name)
        if command is None and cmd_name in self.lazy_commands:
            command = self._load(cmd_name)
        return command

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        # click suggests close names from ``self.commands`` alone: fill it before it fails.
        name = args[0] if args else None
        if isinstance(name, str) and name not in self.commands and name not in self.lazy_commands:
            for lazy in self.lazy_commands:
                self.get_command(ctx, lazy)
        return super().resolve_command(ctx, args)

    def _load(self, name: str) -> click.Command:
        module_name, _, attribute = self.lazy_commands[name].partition(":")
        # __import__, not importlib.import_module: the latter is invisible to -X importtime.
        command = getattr(__import__(module_name, fromlist=[attribute]), attribute)
        if not isinstance(command, click.Command):
            raise TypeError(f"{self.lazy_commands[name]} is not a click command")
        self.add_command(command, name)  # cached: the next lookup is a dict hit
        return command


CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(cls=LazyGroup, lazy_commands=COMMANDS, context_settings=CONTEXT_SETTINGS,
             invoke_without_command=True)
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
        from coop_run.cli.session import default_session

        return default_session(app, detach=detach, workspace=workspace, name=name)
    if detach or workspace is not None or name is not None:
        raise click.UsageError("-d, -w and -n apply to coop without a command")
    return None
