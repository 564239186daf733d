"""``coop status``: rootfs, Coopfile and daemon at a glance (seed 11.3), then what each
running session of the workspace inherited (``[network] inherit``), as its supervisor
tells: variable names, proxy URLs masked, the files bound.

Cheap on purpose: it reads a pid file, one store record and the Coopfile, asks the
daemon and the workspace's supervisors, and never imports the registry client
(requests, oras) or aiohttp.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import click

from coop_build.paths import display_path
from coop_run.cli.app import App
from coop_run.cli.options import global_options
from coop_run.proctitle import DAEMON

HOST_NETWORK = ("host (shares the host's network: its addresses, its loopback services and "
                "its abstract Unix sockets, such as X11's and D-Bus's)")

_LABEL_WIDTH = 12  # "Daemon:     running (PID 1234)": values start in column 13


@dataclass(frozen=True)
class StatusView:
    """Everything ``coop status`` shows, already worded; rendering is separate."""

    daemon: str
    rootfs: str
    coopfile: str
    agent: str
    network: str
    sessions: str
    inherited: tuple[str, ...] = ()  # lines after the seed's six, under "Inherited:"

    def lines(self) -> list[str]:
        rows = (
            ("Daemon", self.daemon),
            ("Rootfs", self.rootfs),
            ("Coopfile", self.coopfile),
            ("Agent", self.agent),
            ("Network", self.network),
            ("Sessions", self.sessions),
        )
        out = [f"{label + ':':<{_LABEL_WIDTH}}{value}" for label, value in rows]
        for index, line in enumerate(self.inherited):
            out.append(f"{'Inherited:' if index == 0 else '':<{_LABEL_WIDTH}}{line}")
        return out


def daemon_state(pid_file: Path) -> str:
    """Without an answer on the socket: ``not running``, or ``not responding (PID n)``."""
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return "not running"
    if pid <= 0:
        return "not running"
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return "not running"
    # Its title (coop_run.proctitle), or a daemon of an older coop that set none.
    if cmdline.rstrip(b"\0") != DAEMON.encode() and b"coop_run.daemon" not in cmdline:
        return "not running"  # a stale pid file (daemon killed), the pid reused since
    return f"not responding (PID {pid})"


def ask_daemon(socket_path: Path, pid_file: Path
               ) -> tuple[str, str | None, list[tuple[str, str]]]:
    """The ``Daemon:`` line and, when the daemon answered, the ``Sessions:`` line and
    each session's (name, workspace).

    Asks the running daemon over its socket and never starts one: ``coop status``
    reports the state, it does not change it.
    """
    from coop_run.cli.formatting import format_sessions_summary
    from coop_run.daemon.autospawn import connect
    from coop_run.errors import CoopError
    from coop_run.ipc import protocol
    from coop_run.ipc.schema import encode

    try:
        client = connect(socket_path)
        if client is None:
            return daemon_state(pid_file), None, []
        with client:
            status = client.call(protocol.Status(), protocol.StatusReply)
            listing = client.call(protocol.Ls(), protocol.LsReply)
    except CoopError:
        return daemon_state(pid_file), None, []
    summary = format_sessions_summary([encode(entry) for entry in listing.sessions])
    names = [(entry.name, entry.workspace) for entry in listing.sessions]
    return f"running (PID {status.pid})", summary, names


def inherited_lines(sessions: Sequence[tuple[str, str]], workspace: Path,
                    socket_of: Callable[[str], Path]) -> list[str]:
    """``NAME: item`` for what each running session of ``workspace`` inherited, asked of
    its supervisor (``socket_of(name)``); a session that does not answer is left out."""
    from coop_run.errors import CoopError
    from coop_run.ipc import protocol
    from coop_run.ipc.client import Client

    here = os.path.realpath(workspace)
    lines: list[str] = []
    for name, session_workspace in sessions:
        if os.path.realpath(session_workspace) != here:
            continue
        try:
            with Client.connect(socket_of(name), timeout=2.0, request_timeout=2.0,
                                what="supervisor") as client:
                reply = client.call(protocol.SupervisorInfo(), protocol.InfoReply)
        except (CoopError, OSError):
            continue
        lines += [f"{name}: {item}" for item in reply.inherited or ["nothing"]]
    return lines


def rootfs_state(image: str, package_count: int, created: float, now: float) -> str:
    """``built 2d ago (node:22-alpine + 12 packages)``."""
    from coop_run.cli.progress import format_age

    noun = "package" if package_count == 1 else "packages"
    return f"built {format_age(now - created)} ({image} + {package_count} {noun})"


@click.command("status")
@global_options
@click.pass_obj
def status_command(app: App) -> None:
    """Show current rootfs info, Coopfile config, and daemon status."""
    from coop_build.errors import CoopfileError
    from coop_build.layers import load_coopfile
    from coop_build.store import Store

    environ = dict(app.environ)
    workspace = app.workspace
    record = Store(app.paths).workspace_build(workspace)
    if record is None:
        rootfs = "not built (run coop init)"
    else:
        rootfs = rootfs_state(
            record.image, record.package_count, record.created, time.time()
        )
    error: CoopfileError | None = None
    coopfile = "none (no ./coop.toml)"
    agent = network = "-"
    try:
        loaded = load_coopfile(workspace=workspace, global_path=app.global_config, environ=environ)
    except CoopfileError as exc:
        error = exc
        local = workspace / "coop.toml"
        if local.exists():
            coopfile = f"{display_path(local, environ)} (invalid)"
    else:
        if loaded.path is not None:
            coopfile = display_path(loaded.path, environ)
        agent = " ".join([loaded.coopfile.agent.command, *loaded.coopfile.agent.args])
        network = loaded.coopfile.network.mode
        if network == "host":  # said plainly: it is no sandbox of the network at all
            network = HOST_NETWORK
    daemon, sessions, running = ask_daemon(app.socket_path, app.layout.daemon_pid)
    view = StatusView(
        daemon=daemon,
        rootfs=rootfs,
        coopfile=coopfile,
        agent=agent,
        network=network,
        # No daemon, no sessions: supervisors without a daemon are picked up by the next one.
        sessions=sessions if sessions is not None else "0 running",
        inherited=tuple(inherited_lines(running, workspace,
                                        lambda name: app.layout.session(name).supervisor_socket)),
    )
    for line in view.lines():
        click.echo(line, file=app.out)
    if error is not None and (workspace / "coop.toml").exists():
        raise error

