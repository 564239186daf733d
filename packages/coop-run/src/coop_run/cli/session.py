"""Session commands (seed 11.2): bare ``coop``, ``attach``, ``shell``, ``kill``, ``restart``.

The daemon does the Coopfile work; the CLI only reads ``[env]`` with ``tomllib`` to send
the variables the Coopfile references from this shell's environment, and sends the proxy
and TLS trust variables a session may inherit (``[network] inherit``: the daemon picks).
No asyncio or pydantic here.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

import click

from coop_build.envref import env_reference
from coop_build.paths import display_path
from coop_run.cli.app import App
from coop_run.cli.options import global_options
from coop_run.ipc import protocol
from coop_run.ipc.client import Client


def referenced_env(files: Iterable[Path], environ: Mapping[str, str]) -> dict[str, str]:
    """The variables that ``[env]`` values ``$NAME``/``${NAME}`` of ``files`` refer to."""
    import tomllib  # only here: coop ls never needs it

    out: dict[str, str] = {}
    for path in files:
        try:
            with path.open("rb") as fh:
                data = tomllib.load(fh)
        except (OSError, tomllib.TOMLDecodeError):
            continue  # the daemon reports a broken Coopfile properly
        table = data.get("env")
        if not isinstance(table, dict):
            continue
        for value in table.values():
            name = env_reference(value)
            if name is not None and name in environ:
                out[name] = environ[name]
    return out


def inheritable_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The proxy and TLS trust variables of ``environ``: what a session may inherit
    (the daemon's own environment is not the user's)."""
    from coop_build.inherit import proxy_variables
    from coop_build.tlstrust import trust_variables

    return {**proxy_variables(environ), **trust_variables(environ)}


def session_key(session: str | None, cwd: Path) -> str:
    """What the daemon looks up: a name as given, a path made absolute and real."""
    if session is None:
        return str(cwd)
    if "/" in session or session in (".", ".."):
        return os.path.realpath(session)
    return session


def complete_session(ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[str]:
    """Shell completion of SESSION: the running sessions' names. Asks a running daemon
    only: pressing Tab never starts one."""
    from coop_run.daemon.autospawn import connect
    from coop_run.errors import CoopError

    app = ctx.find_object(App) or App()
    try:
        client = connect(app.socket_path)
        if client is None:
            return []
        with client:
            sessions = client.call(protocol.Ls(), protocol.LsReply).sessions
    except (CoopError, OSError):
        return []
    return sorted(s.name for s in sessions if s.name.startswith(incomplete))


def _size() -> tuple[int | None, int | None]:
    """This terminal's (cols, rows), or (None, None): the session keeps its size."""
    from coop_run.cli.attach import terminal_size

    size = terminal_size(sys.stdout.fileno()) or terminal_size(sys.stdin.fileno())
    return (None, None) if size is None else size


def _stream(app: App, client: Client, request: protocol.Attach | protocol.Shell, *,
            is_shell: bool) -> int:
    from coop_run.cli.attach import open_stream, run_terminal

    sock, reply = open_stream(client, request)
    name = reply.session  # the name, also when the session was given by path
    outcome = run_terminal(sock, exit_on_pty_exit=is_shell)
    if outcome.reason == "detached":
        app.echo(f"[detached from session {name}]")
        return 0
    if outcome.reason == "exited":
        return outcome.code
    if not is_shell:
        app.echo(f"[session {name} ended]")
    return 0


def default_session(app: App, *, detach: bool, workspace: Path | None,
                    name: str | None) -> int:
    """``coop [-d] [-w DIR] [-n NAME]``: attach to the workspace's session, creating it.

    Without ``-n``: the workspace's most recent session. A NAME the workspace has not used
    starts another session there (two agents on one repository).
    """
    from coop_run.daemon.autospawn import ensure_daemon
    from coop_run.errors import SandboxError
    from coop_run.layout import check_session_name

    ws = Path(os.path.realpath(workspace if workspace is not None else app.workspace))
    if not ws.is_dir():
        raise click.BadParameter(f"{display_path(ws, app.environ)} is not a directory",
                                 param_hint="-w/--workspace")
    if name is not None:
        try:
            check_session_name(name)
        except SandboxError as exc:
            raise click.BadParameter(exc.message, param_hint="-n/--name") from exc
    # The daemon may have started in another directory and environment: name the global
    # layer (--config, else this shell's default) so it reads the file whose references
    # we send.
    global_config = app.global_config.absolute()
    env = referenced_env([global_config, ws / "coop.toml"], app.environ)
    env.update(inheritable_env(app.environ))
    cols, rows = _size()
    request = protocol.Create(workspace=str(ws), name=name, detach=detach, env=env,
                              config=str(global_config), cols=cols, rows=rows)
    with ensure_daemon(app.paths, app.socket_path) as client:
        reply = _create(app, client, request, ws)
        for warning in reply.warnings:
            app.warn(warning)
        if detach:
            verb = "created" if reply.created else "already running"
            app.echo(f"session {reply.name} {verb}")
            return 0
        return _stream(app, client, protocol.Attach(session=reply.name, cols=cols, rows=rows),
                       is_shell=False)


def _create(app: App, client: Client, request: protocol.Create,
            ws: Path) -> protocol.CreateReply:
    """The daemon's answer to ``create``. Without a Coopfile (a workspace that has no
    session yet), the first-contact line replaces the missing ``[agent].command``. A
    Coopfile the user has not trusted is shown and asked about at a terminal, and the
    create tried once more on yes."""
    from coop_run.cli.examples import require_coopfile
    from coop_run.errors import RemoteError, UntrustedCoopfileError

    try:
        reply = client.call(request, protocol.CreateReply)
    except RemoteError as exc:
        if exc.code == protocol.INVALID_COOPFILE:
            require_coopfile(app, ws)
        raise
    except UntrustedCoopfileError as exc:
        from coop_run.cli.trust import ask_to_trust, untrusted

        ask_to_trust(app, exc)
        try:
            reply = client.call(request, protocol.CreateReply)
        except UntrustedCoopfileError as again:  # it changed meanwhile: no second question
            raise untrusted(app, again) from None
    return reply


@click.command("attach")
@click.argument("session", required=False, shell_complete=complete_session)
@global_options
@click.pass_obj
def attach_command(app: App, session: str | None) -> int:
    """Attach to an existing session's agent PTY (Ctrl+] detaches)."""
    from coop_run.daemon.autospawn import ensure_daemon

    key = session_key(session, app.workspace)
    with ensure_daemon(app.paths, app.socket_path) as client:
        cols, rows = _size()
        return _stream(app, client, protocol.Attach(session=key, cols=cols, rows=rows),
                       is_shell=False)


@click.command("shell")
@click.argument("session", required=False, shell_complete=complete_session)
@click.option("-c", "--command", "command", metavar="CMD", help="Shell command (default: /bin/sh).")
@global_options
@click.pass_obj
def shell_command(app: App, session: str | None, command: str | None) -> int:
    """Spawn a new shell PTY inside an existing session and attach to it."""
    from coop_run.daemon.autospawn import ensure_daemon

    key = session_key(session, app.workspace)
    cols, rows = _size()
    request = protocol.Shell(session=key, command=command, cols=cols, rows=rows)
    with ensure_daemon(app.paths, app.socket_path) as client:
        return _stream(app, client, request, is_shell=True)


@click.command("kill")
@click.argument("session", required=False, shell_complete=complete_session)
@click.option("--all", "kill_all", is_flag=True, help="Kill all sessions.")
@click.option("-f", "force", is_flag=True, help="Force kill (SIGKILL, no grace period).")
@global_options
@click.pass_obj
def kill_command(app: App, session: str | None, kill_all: bool, force: bool) -> None:
    """Kill a session and all its processes."""
    from coop_run.daemon.autospawn import ensure_daemon

    if kill_all and session is not None:
        raise click.UsageError("give a SESSION or --all, not both")
    request = (protocol.Kill(force=force, all=True) if kill_all
               else protocol.Kill(force=force, session=session_key(session, app.workspace)))
    with ensure_daemon(app.paths, app.socket_path) as client:
        reply = client.call(request, protocol.KillReply)
    for name in reply.killed:
        app.echo(f"killed session {name}")


@click.command("restart")
@click.argument("session", required=False, shell_complete=complete_session)
@global_options
@click.pass_obj
def restart_command(app: App, session: str | None) -> None:
    """Restart a session's agent (its shells keep running)."""
    from coop_run.daemon.autospawn import ensure_daemon

    with ensure_daemon(app.paths, app.socket_path) as client:
        reply = client.call(protocol.Restart(session=session_key(session, app.workspace)),
                            protocol.RestartReply)
    app.echo(f"restarting the agent of session {reply.name}")
