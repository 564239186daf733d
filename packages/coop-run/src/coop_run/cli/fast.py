"""``coop ls`` without click: the command whose start-up time is benchmarked (tests/bench).

click and what it imports (inspect, uuid, datetime, gettext) cost about as much as
starting Python, so ``run()`` hands the exact argument lists of ``FAST`` to a plain
function here; anything else (``-q``, ``--help``, a typo) goes through click as before.
Both paths print the same bytes: the click command calls ``list_sessions`` too, and
``echo`` writes what ``click.echo`` writes. Keep this module's imports to what
``coop ls`` needs anyway.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Mapping, Sequence

from coop_run.cli.app import App
from coop_run.cli.options import configure_logging

# click's shell completion runs when this is set: leave those runs to click.
COMPLETE_VAR = "_COOP_COMPLETE"
# What click.echo strips when the output is not a terminal (click.utils' pattern).
_ANSI = r"\033\[[;?0-9]*[a-zA-Z]"


def list_sessions(app: App, *, as_json: bool) -> str:
    """The text of ``coop ls [--json]``, starting the daemon if none runs (SPEC 5)."""
    from coop_run.cli.formatting import format_ls, format_ls_json
    from coop_run.daemon.autospawn import ensure_daemon
    from coop_run.ipc import protocol
    from coop_run.ipc.schema import encode

    with ensure_daemon(app.paths, app.socket_path) as client:
        reply = client.call(protocol.Ls(), protocol.LsReply)
    sessions = [encode(entry) for entry in reply.sessions]  # checked, then shown as sent
    if as_json:
        return format_ls_json(sessions)
    return format_ls(sessions, now=time.time(), home=app.environ.get("HOME", ""))


def echo(app: App, text: str) -> None:
    """``click.echo(text, file=app.out)``: a line, ANSI codes stripped unless on a terminal."""
    try:
        tty = app.out.isatty()
    except Exception:  # click's isatty(): any failure means "not a terminal"
        tty = False
    if not tty and "\033" in text:
        text = re.sub(_ANSI, "", text)
    app.out.write(text + "\n")
    app.out.flush()


def _ls(app: App, *, as_json: bool) -> None:
    configure_logging(app)  # what the root group's callback does before any command
    echo(app, list_sessions(app, as_json=as_json))


FAST: Mapping[tuple[str, ...], Callable[[App], None]] = {
    ("ls",): lambda app: _ls(app, as_json=False),
    ("ls", "--json"): lambda app: _ls(app, as_json=True),
}


def fast_command(args: Sequence[str]) -> Callable[[App], None] | None:
    """The click-free handler for exactly ``args``, or None: then click parses them."""
    if COMPLETE_VAR in os.environ:
        return None
    return FAST.get(tuple(args))
