"""The seed's global options (11.6), accepted before or after the command name.

``coop -q init`` and ``coop init -q`` mean the same: the seed says these options apply to
every command, and users of git, podman and tmux type them in either place.

click is imported inside the functions: ``configure_logging`` is also used by the
click-free ``coop ls`` (``coop_run.cli.fast``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from coop_run.cli.app import App

if TYPE_CHECKING:
    import click

_LOG_HANDLER = "coop-cli"
F = TypeVar("F", bound=Callable[..., Any])


def configure_logging(app: App) -> None:
    """Library logs reach stderr: warnings normally, everything with ``-v``, none with ``-q``."""
    handler = logging.StreamHandler(app.err)
    if app.verbose:
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        level = logging.DEBUG
    else:
        handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
        level = logging.ERROR if app.quiet else logging.WARNING
    handler.set_name(_LOG_HANDLER)
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _LOG_HANDLER]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)


def _set(field: str) -> Callable[[click.Context, click.Parameter, Any], None]:
    def callback(ctx: click.Context, _param: click.Parameter, value: Any) -> None:
        import click

        if value is None or value is False:
            return
        app = ctx.ensure_object(App)
        setattr(app, field, value)
        if app.verbose and app.quiet:
            raise click.UsageError("-v/--verbose and -q/--quiet cannot be used together")
        if field in ("verbose", "quiet"):
            configure_logging(app)

    return callback


def global_options(func: F) -> F:
    """Add ``--config``, ``--socket``, ``-v`` and ``-q`` to a group or command."""
    import click

    decorators = [
        click.option(
            "--config",
            type=click.Path(dir_okay=False, path_type=Path),
            expose_value=False,
            callback=_set("config"),
            help="Global config path (default: ~/.config/coop/default.toml).",
        ),
        click.option(
            "--socket",
            type=click.Path(path_type=Path),
            expose_value=False,
            callback=_set("socket"),
            help="Daemon socket path (default: ~/.coop/sock).",
        ),
        click.option(
            "-v", "--verbose", is_flag=True, expose_value=False, callback=_set("verbose"),
            help="Verbose output.",
        ),
        click.option(
            "-q", "--quiet", is_flag=True, expose_value=False, callback=_set("quiet"),
            help="Suppress non-essential output.",
        ),
    ]
    for decorate in reversed(decorators):
        func = decorate(func)
    return func
