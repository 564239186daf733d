"""``coop shutdown`` and ``coop logs`` (seed 11.5).

Neither starts a daemon: ``shutdown`` with none running has nothing to do, and ``logs``
reads the log file, which outlives the daemon that wrote it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import click

from coop_build.paths import display_path
from coop_run.cli.app import App
from coop_run.cli.options import global_options
from coop_run.errors import CoopError

SHUTDOWN_WAIT = 10.0
FOLLOW_INTERVAL = 0.25


@click.command("shutdown")
@global_options
@click.pass_obj
def shutdown_command(app: App) -> None:
    """Gracefully shut down the daemon. Sessions are detached, not killed."""
    from coop_run.daemon.autospawn import connect
    from coop_run.ipc import protocol

    client = connect(app.socket_path)
    if client is None:
        app.echo("no daemon running")
        return
    with client:
        pid = client.call(protocol.Shutdown(), protocol.ShutdownReply).pid
        # The daemon hangs up once it has removed its socket and pid file.
        client.wait_closed(SHUTDOWN_WAIT)
    app.echo(f"daemon stopped (PID {pid})")


def _read_tail(path: Path, lines: int) -> tuple[list[str], int]:
    """The last ``lines`` lines of ``path`` and the file size they end at."""
    with path.open("rb") as fh:
        data = fh.read()
    if lines <= 0:
        return [], len(data)
    text = data.decode("utf-8", errors="replace").splitlines()
    return text[-lines:], len(data)


def _follow(app: App, path: Path, offset: int) -> None:
    """Print what is appended to ``path`` until interrupted (``tail -F`` style)."""
    partial = b""
    while True:
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            size = 0
        if size < offset:  # truncated or replaced: start again from its beginning
            offset = 0
        if size > offset:
            with path.open("rb") as fh:
                fh.seek(offset)
                chunk = fh.read()
            offset += len(chunk)
            partial += chunk
            *complete, partial = partial.split(b"\n")
            for line in complete:
                click.echo(line.decode("utf-8", errors="replace"), file=app.out)
        else:
            time.sleep(FOLLOW_INTERVAL)


@click.command("logs")
@click.option("-f", "--follow", is_flag=True, help="Follow log output.")
@click.option("-n", "lines", type=click.IntRange(min=0), default=50, show_default=True,
              metavar="LINES", help="Number of lines.")
@global_options
@click.pass_obj
def logs_command(app: App, follow: bool, lines: int) -> None:
    """Tail the daemon log."""
    path = app.layout.daemon_log
    offset = 0
    try:
        tail, offset = _read_tail(path, lines)
    except FileNotFoundError:
        if not follow:
            app.echo(f"no daemon log yet ({display_path(path, app.environ)})")
            return
        tail = []
    except OSError as exc:
        raise CoopError(
            f"cannot read {display_path(path, app.environ)}: {os.strerror(exc.errno or 0)}",
            code="LOG_UNREADABLE") from exc
    for line in tail:
        click.echo(line, file=app.out)
    if follow:
        _follow(app, path, offset)
