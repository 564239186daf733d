"""``coop serve`` (seed 11.4, SPEC 8): the web UI's server, run by the daemon.

The CLI asks the daemon to start the server and prints what it answers: the local URL,
one network URL per address a phone could use, the read-only link, and a QR code of the
network URL. Then it stays in the foreground: Ctrl+C (exit 130) stops the server, and so
does ``coop serve --stop`` from elsewhere (exit 0); sessions keep running either way.
``-d`` leaves the server in the daemon until ``--stop``. A second ``coop serve`` while
one runs prints the running server's links.
"""

from __future__ import annotations

from collections.abc import Sequence

import click

from coop_run.cli.app import App
from coop_run.cli.options import global_options
from coop_run.errors import CoopError, DaemonError, RemoteError, UsageError
from coop_run.ipc import protocol
from coop_run.ipc.client import Client
from coop_run.ipc.schema import decode

QR_BORDER = 2  # light modules around the code (scanners want some quiet zone)
# Two rows of modules per line of text, light modules drawn: a QR code reads right on a
# dark terminal (the common case) the way ``qrencode -t UTF8`` prints it.
_HALF_BLOCKS = {(True, True): "█", (True, False): "▀", (False, True): "▄",
                (False, False): " "}


def qr_lines(text: str) -> list[str]:
    """``text`` as a QR code in lines of half blocks (light modules drawn)."""
    import qrcode

    code = qrcode.QRCode(border=QR_BORDER, error_correction=qrcode.constants.ERROR_CORRECT_L)
    code.add_data(text)
    code.make(fit=True)
    dark: list[list[bool]] = code.get_matrix()
    return render_half_blocks([[not module for module in row] for row in dark])


def render_half_blocks(light: Sequence[Sequence[bool]]) -> list[str]:
    """A matrix (True: light) as lines, each holding two of its rows."""
    rows = [list(row) for row in light]
    if len(rows) % 2:
        rows.append([False] * len(rows[0]))
    return ["".join(_HALF_BLOCKS[top, bottom] for top, bottom in zip(upper, lower, strict=True))
            for upper, lower in zip(rows[0::2], rows[1::2], strict=True)]


def _print_links(app: App, reply: protocol.ServeReply) -> None:
    local, *network = reply.urls
    read_only = reply.read_only_urls[1] if network else reply.read_only_urls[0]
    out = app.out
    print(f"  Local:      {local}", file=out)
    for url in network:
        print(f"  Network:    {url}", file=out)
    print(f"  Read-only:  {read_only}", file=out, flush=True)
    if network:
        app.echo("")
        for line in qr_lines(network[0]):
            app.echo(f"  {line}")
        app.echo("")
        app.echo(f"Scan the code to open {network[0].split('?')[0]} on a phone.")
    else:
        app.echo("Only this machine can connect: coop serve -H 0.0.0.0 listens on the network.")


@click.command("serve")
@click.option("-p", "--port", type=click.IntRange(0, 65535), default=8888, show_default=True,
              help="Port number.")
@click.option("-H", "--host", default="127.0.0.1", show_default=True, help="Bind address.")
@click.option("--token", help="Use a specific auth token instead of auto-generating.")
@click.option("--stop", is_flag=True, help="Stop the running web server.")
@click.option("-d", "--detach", is_flag=True,
              help="Leave the server in the daemon until coop serve --stop.")
@global_options
@click.pass_obj
def serve_command(app: App, *, port: int, host: str, token: str | None, stop: bool,
                  detach: bool) -> None:
    """Start the embedded web UI server. A random auth token is always generated and
    embedded in the displayed URLs and QR code."""
    from coop_run.daemon.autospawn import connect, ensure_daemon

    if stop:
        client = connect(app.socket_path)
        if client is None:
            app.echo("no web server is running")
            return
        with client:
            stopped = client.call(protocol.Serve(stop=True), protocol.ServeStopped).stopped
        app.echo("web server stopped (sessions keep running)" if stopped
                 else "no web server is running")
        return
    with ensure_daemon(app.paths, app.socket_path) as client:
        try:
            reply = client.call(protocol.Serve(port=port, host=host, token=token,
                                               detach=detach or None), protocol.ServeReply)
        except RemoteError as exc:
            if exc.code == protocol.INVALID_COMMAND:
                raise UsageError(exc.message) from None
            raise
        where = f"{reply.host}:{reply.port}"
        if not reply.started:
            app.echo(f"A web server is already running on {where}:")
        else:
            app.echo(f"Web UI on {where}:")
        _print_links(app, reply)
        if not reply.started or detach:
            app.echo("The server stays until coop serve --stop; sessions keep running.")
            return
        app.echo("Press Ctrl+C to stop the server; sessions keep running.")
        _wait(app, client)


def _wait(app: App, client: Client) -> None:
    """In the foreground until Ctrl+C (exit 130) or a stop from elsewhere (exit 0)."""
    try:
        message = client.wait()
    except KeyboardInterrupt:
        app.error("web server stopped (sessions keep running)")
        raise click.exceptions.Exit(130) from None
    except DaemonError:
        raise CoopError("the daemon stopped, and the web server with it "
                        "(sessions keep running; coop serve starts another)") from None
    if message.get("event") == protocol.ServerStopped.TAG:
        app.echo(f"web server {decode(protocol.ServerStopped, message).reason}")
        return
    raise CoopError("the daemon sent something unexpected; the web server is stopped")
