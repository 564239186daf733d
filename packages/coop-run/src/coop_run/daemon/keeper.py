"""The keeper: a small process that brings the daemon back after a crash while a detached
web server runs (SPEC 13, ``coop serve -d``), so a phone's link works again with nothing
typed, sessions or not.

The daemon starts it (``Keeper.start``) whenever it serves a detached server, as
``python -m coop_run.daemon.keeper --pid P --start S --socket PATH``, in a session of its
own so that a ``kill -9`` of the daemon leaves it running. It waits on a pidfd of that
daemon. When the daemon ends it starts a new one through ``autospawn.ensure_daemon`` (the
lock, the stale socket, the readiness pipe), but only after a crash: a daemon that exits
on purpose removes its pid file first, and a stopped server its record
(``RunLayout.web_server``). The new daemon restores the server from the record and starts
its own keeper; this one exits. The daemon watches its keeper and starts another if it
dies, and stops it when the server stops or the daemon shuts down.
"""

from __future__ import annotations

import argparse
import logging
import os
import select
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from coop_build.paths import CoopPaths, coop_home
from coop_run.layout import RunLayout
from coop_run.procs import open_pidfd, proc_start_time

if TYPE_CHECKING:
    import asyncio

log = logging.getLogger("coop_run.daemon.keeper")  # __main__ under ``python -m``

RESPAWN_LIMIT = 5  # keepers the daemon starts again after they died, before it gives up


def crashed(layout: RunLayout, pid: int) -> bool:
    """Whether the daemon ``pid`` that just ended should be brought back: its pid file
    still names it (a daemon that exits on purpose removes it) and a detached server's
    record is there."""
    try:
        recorded = int(layout.daemon_pid.read_text().strip())
    except (OSError, ValueError):
        return False
    return recorded == pid and layout.web_server.exists()


def keeper_argv(pid: int, start: int | None, socket_path: Path) -> list[str]:
    return [sys.executable, "-m", "coop_run.daemon.keeper", "--pid", str(pid),
            "--start", str(start or 0), "--socket", str(socket_path)]


class Keeper:
    """The daemon's side: start its keeper, watch it (a pidfd), stop it."""

    def __init__(self, socket_path: Path, log_file: Path) -> None:
        self.socket_path = socket_path
        self.log_file = log_file
        self._process: subprocess.Popen[bytes] | None = None
        self._watch: asyncio.Task[None] | None = None
        self._respawns = 0

    def start(self) -> None:
        """Start the keeper unless it runs, watched by a task of the running loop that
        starts it again if it dies (up to ``RESPAWN_LIMIT`` times)."""
        import asyncio

        if self._process is not None:
            return
        pid = os.getpid()
        with open(self.log_file, "ab", buffering=0) as out:  # noqa: PTH123 - an fd to pass on
            process = subprocess.Popen(
                keeper_argv(pid, proc_start_time(pid), self.socket_path),
                stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True,
                cwd="/")
        self._process = process
        log.info("keeper %d watches this daemon", process.pid)
        self._watch = asyncio.get_running_loop().create_task(self._watched(process))

    async def _watched(self, process: subprocess.Popen[bytes]) -> None:
        from coop_run.daemon.supervisors import process_exit

        await process_exit(process.pid, proc_start_time(process.pid))
        code = process.wait()  # it has ended: reaped at once
        if self._process is not process:
            return  # stopped on purpose
        self._process = None
        self._respawns += 1
        if self._respawns > RESPAWN_LIMIT:
            log.error("keeper %d exited (%s); not starting another", process.pid, code)
            return
        log.warning("keeper %d exited (%s); starting another", process.pid, code)
        self.start()

    async def stop(self) -> None:
        """Stop the keeper (the server stopped, or the daemon shuts down) and reap it."""
        from coop_run.daemon.supervisors import process_exit

        process, self._process = self._process, None
        watch, self._watch = self._watch, None
        if watch is not None:
            watch.cancel()
        if process is None or process.poll() is not None:
            return
        start = proc_start_time(process.pid)
        process.send_signal(signal.SIGTERM)
        if not await process_exit(process.pid, start, timeout=5.0):
            process.kill()
        process.wait()


# --- the keeper process -----------------------------------------------------------------

def _wait_exit(pid: int, start: int | None) -> None:
    """Block until the process (pid, start time) has ended; at once if it already has."""
    pidfd = open_pidfd(pid, start)
    if pidfd is None:
        return
    try:
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        while not poller.poll():
            pass
    finally:
        os.close(pidfd)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m coop_run.daemon.keeper",
                                     description="Brings the coop daemon back after a crash "
                                                 "(started by the daemon).")
    parser.add_argument("--pid", type=int, required=True, help="the daemon's pid")
    parser.add_argument("--start", type=int, default=0, help="its /proc start time")
    parser.add_argument("--socket", type=Path, required=True, help="the daemon's socket")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    from coop_run import proctitle

    proctitle.set_title(proctitle.KEEPER)
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s")
    paths = CoopPaths(coop_home())
    _wait_exit(args.pid, args.start or proc_start_time(args.pid))
    if not crashed(RunLayout(paths), args.pid):
        return 0
    log.warning("the daemon %d died while serving a detached web server: starting a new one",
                args.pid)
    from coop_run.daemon.autospawn import ensure_daemon
    from coop_run.errors import CoopError

    try:
        ensure_daemon(paths, args.socket).close()
    except CoopError as exc:
        log.error("cannot start a new daemon: %s", exc.message)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
