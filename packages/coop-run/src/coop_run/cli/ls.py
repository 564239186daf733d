"""``coop ls [--json]``: the daemon's session list (seed 11.2).

The plain ``coop ls`` and ``coop ls --json`` do not come here: ``coop_run.cli.fast`` runs
them without click. This command serves the other spellings (``coop ls -q``,
``coop -v ls --json``) with the same ``list_sessions``.
"""

from __future__ import annotations

import click

from coop_run.cli.app import App
from coop_run.cli.options import global_options


@click.command("ls")
@click.option("--json", "as_json", is_flag=True, help="Output as JSON.")
@global_options
@click.pass_obj
def ls_command(app: App, as_json: bool) -> None:
    """List all running sessions."""
    from coop_run.cli.fast import list_sessions

    click.echo(list_sessions(app, as_json=as_json), file=app.out)
