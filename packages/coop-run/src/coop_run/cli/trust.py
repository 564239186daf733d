"""``coop trust [FILE]``, and the question a create asks about an untrusted Coopfile.

The daemon refuses a session whose workspace ``coop.toml`` widens the sandbox until the
user trusts exactly those bytes (``coop_run.trust``). Here the user says yes: ahead of
time with ``coop trust``, or when ``coop`` is refused at a terminal, after seeing in full
what the file asks. Without a terminal nothing is asked: one line, exit 2.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from coop_build.paths import display_path
from coop_run import trust
from coop_run.cli.app import App
from coop_run.cli.options import global_options
from coop_run.errors import CoopError, UntrustedCoopfileError

COOPFILE = "coop.toml"
PROMPT = "Trust this coop.toml? [y/N] "


def untrusted(app: App, exc: UntrustedCoopfileError) -> UntrustedCoopfileError:
    """The daemon's refusal with the file named as this shell would type it."""
    asks = [trust.Ask(*ask) for ask in exc.asks]
    shown = display_path(exc.path, app.environ)
    return UntrustedCoopfileError(trust.refusal_message(exc.path, shown, asks),
                                  path=exc.path, sha256=exc.sha256, asks=asks)


def ask_to_trust(app: App, exc: UntrustedCoopfileError) -> None:
    """At a terminal (stdin and stderr), show what the refused file asks and ask; on yes
    record the trust for the bytes the daemon read. Otherwise, and on no or end of input,
    raise the one-line refusal (exit 2)."""
    refusal = untrusted(app, exc)
    if not (sys.stdin.isatty() and app.err.isatty()):
        raise refusal
    asks = [trust.Ask(*ask) for ask in exc.asks]
    for line in trust.explain(display_path(exc.path, app.environ), asks):
        app.error(line)
    print(PROMPT, end="", file=app.err, flush=True)
    answer = sys.stdin.readline()
    if not answer:
        print(file=app.err, flush=True)  # end of input: close the prompt's line
    if answer.strip().lower() not in ("y", "yes"):
        raise refusal
    trust.TrustStore(app.layout).trust(Path(exc.path), exc.sha256, asks)


@click.command("trust")
@click.argument("file", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("-w", "--workspace", type=click.Path(file_okay=False, path_type=Path),
              default=None, help="Trust this workspace's coop.toml (default: cwd's).")
@click.option("--revoke", is_flag=True, help="Forget the trust instead.")
@global_options
@click.pass_obj
def trust_command(app: App, file: Path | None, workspace: Path | None, revoke: bool) -> None:
    """Trust a workspace's coop.toml (default: ./coop.toml) to widen its sandbox.

    Prints what it asks beyond coop's defaults (a mount outside the workspace, the
    host's network, variables from your environment) and allows exactly that, until
    the file changes.
    """
    from coop_build.layers import load_coopfile
    from coop_run.ipc import protocol

    if file is not None and workspace is not None:
        raise click.UsageError("give FILE or -w, not both")
    app.workspace_dir = workspace
    path = Path.cwd() / (file if file is not None else app.workspace / COOPFILE)
    shown = display_path(path, app.environ)
    store = trust.TrustStore(app.layout)
    if revoke:
        app.echo(f"{shown}: trust revoked" if store.revoke(path) else f"{shown} was not trusted")
        return
    loaded = load_coopfile(path, global_path=app.global_config, environ=app.environ)
    layer = loaded.layer("workspace")
    if layer is None or layer.sha256 is None:  # an explicit path is always read
        raise CoopError(f"{shown}: nothing was read", code=protocol.INVALID_COOPFILE)
    start = path.parent
    refusal = trust.mount_refusal(start, loaded.coopfile.workspace.mount, app.paths.home)
    if refusal is not None:
        raise CoopError(f"{shown}: {refusal}", code=protocol.INVALID_COOPFILE)
    below = loaded.layer("global")
    asks = trust.what_it_asks(layer.data, start=start,
                              below=None if below is None else below.data)
    if not asks:
        app.echo(f"{shown} asks for nothing beyond coop's defaults: nothing to trust")
        return
    for line in trust.explain(shown, asks):
        app.echo(line)
    store.trust(path, layer.sha256, asks)
    app.echo(f"Trusted {shown} (until it changes)")
