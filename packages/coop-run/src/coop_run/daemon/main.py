"""The daemon process's entry point: ``python -m coop_run.daemon.main`` (what
``autospawn`` runs). Parses its arguments, detaches, logs to ``logs/daemon.log``,
rediscovers running sessions, then serves until shutdown."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from coop_build.paths import CoopPaths, coop_home
from coop_run import proctitle
from coop_run.daemon.commands import SessionCommands
from coop_run.daemon.extensions import Extensions
from coop_run.daemon.registry import SessionRegistry
from coop_run.daemon.server import Daemon, idle_timeout
from coop_run.errors import CoopError
from coop_run.layout import RunLayout

# Named explicitly: under ``python -m`` __name__ is "__main__".
log = logging.getLogger("coop_run.daemon.main")


def _configure_logging(log_file: Path) -> None:
    log_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(log_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.close(fd)
    handler = logging.FileHandler(log_file, encoding="utf-8")
    handler.setFormatter(logging.Formatter(
        "%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)


def _parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m coop_run.daemon.main",
                                     description="The coop daemon (normally started by coop).")
    parser.add_argument("--socket", type=Path, help="socket path (default: $COOP_HOME/sock)")
    parser.add_argument("--detach", action="store_true",
                        help="fork once more and let the parent exit (double fork)")
    parser.add_argument("--ready-fd", type=int, default=-1,
                        help="write '1' to this descriptor once bound, then close it")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the daemon in this process (after a second fork with ``--detach``)."""
    args = _parse_args(sys.argv[1:] if argv is None else argv)
    if args.detach and os.fork() > 0:
        os._exit(0)  # the first child: the spawner reaps it, the daemon is orphaned
    proctitle.set_title(proctitle.DAEMON)  # before it is ready: whoever sees it, sees this
    os.umask(0o077)
    paths = CoopPaths(coop_home())
    layout = RunLayout(paths)
    socket_path: Path = args.socket if args.socket is not None else layout.socket
    _configure_logging(layout.daemon_log)
    ready_fd: int = args.ready_fd

    def ready() -> None:
        nonlocal ready_fd
        if ready_fd >= 0:
            with contextlib.suppress(OSError):
                os.write(ready_fd, b"1")
            os.close(ready_fd)
            ready_fd = -1

    try:
        registry = SessionRegistry(paths)
        registry.rediscover()
        daemon = Daemon(paths, socket_path, sessions=registry,
                        idle_seconds=idle_timeout(os.environ))
        commands = SessionCommands(daemon, registry)
        commands.register()
        Extensions(daemon, commands).register()  # the web server, loaded when needed

        async def stop_watchers() -> None:
            # SPEC 5: attached clients live in the supervisors; they get ``detached``
            # there, and every session keeps running.
            detached = await registry.detach_clients()
            if detached:
                log.info("detached %d client(s) of sessions", detached)
            registry.stop_watchers()
            commands.close()

        daemon.on_start(lambda: registry.start_watchers(daemon.start_task))
        daemon.on_shutdown(stop_watchers)
        asyncio.run(daemon.run(ready))
    except CoopError as exc:
        log.error("daemon cannot start: %s", exc.message)
        return 4
    except Exception:
        log.exception("daemon crashed")
        return 1
    finally:
        if ready_fd >= 0:
            os.close(ready_fd)
    return 0


if __name__ == "__main__":
    sys.exit(main())
