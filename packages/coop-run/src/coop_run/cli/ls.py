"""``coop ls [--json]``: the daemon's session list (seed 11.2).

On the fast path of the CLI: only the socket client, framing and the table formatter are
imported here (no asyncio, pydantic or coop_build beyond paths).
"""

from __future__ import annotations

import time

import click

from coop_run.cli.app import App
from coop_run.cli.options import global_options


@click.command("ls")
@click.option("--json", "as_json", is_flag=True, help="Output as JSON.")
@global_options
@click.pass_obj
def ls_command(app: App, as_json: bool) -> None:
    """List all running sessions."""
    from coop_run.formatting import format_ls, format_ls_json
    from coop_run.spawn import ensure_daemon

    with ensure_daemon(app.paths, app.socket_path) as client:
        sessions = client.request({"cmd": "ls"}).get("sessions")
    if not isinstance(sessions, list):
        sessions = []
    if as_json:
        text = format_ls_json(sessions)
    else:
        text = format_ls(sessions, now=time.time(), home=app.environ.get("HOME", ""))
    click.echo(text, file=app.out)
