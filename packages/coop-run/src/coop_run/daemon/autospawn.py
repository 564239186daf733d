"""``ensure_daemon()``: connect to the daemon, or start exactly one (SPEC 5).

Concurrent commands serialise on ``~/.coop/daemon.lock`` and re-check the socket once they
hold it, so twenty ``coop ls`` at once start one daemon. The daemon is started as
``python -m coop_run.daemon.main --detach``: it forks again and its first child exits (double
fork), so it is nobody's child and outlives the command. A pipe tells the spawner the
moment the daemon is bound (a byte) or has died (end of file), and the wait for that is a
deadline of 2.5 s; on failure the error carries the end of the daemon log. No asyncio here.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from coop_build.paths import CoopPaths, display_path
from coop_run.errors import DaemonStartError, DaemonUnavailableError
from coop_run.ipc.client import Client
from coop_run.layout import RunLayout
from coop_run.statefiles import locked

log = logging.getLogger(__name__)

START_TIMEOUT = 2.5
LOG_TAIL_LINES = 10


def log_tail(path: Path, lines: int = LOG_TAIL_LINES, max_bytes: int = 65536) -> list[str]:
    """The last ``lines`` lines of ``path`` (empty if it cannot be read)."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - max_bytes))
            data = fh.read()
    except OSError:
        return []
    text = data.decode("utf-8", errors="replace").splitlines()
    return [line for line in text if line.strip()][-lines:]


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(locked(path))
        except OSError as exc:
            raise DaemonStartError(
                f"daemon failed to start: cannot open the lock {display_path(path)}: "
                f"{exc.strerror or exc}"
            ) from exc
        yield


def prepare_home(paths: CoopPaths) -> None:
    """``COOP_HOME`` and its logs directory, private to the user."""
    for directory in (paths.home, paths.logs):
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise DaemonStartError(
                f"daemon failed to start: cannot create {display_path(directory)}: "
                f"{exc.strerror or exc}"
            ) from exc


def daemon_argv(socket_path: Path, ready_fd: int) -> list[str]:
    return [sys.executable, "-m", "coop_run.daemon.main", "--detach",
            "--socket", str(socket_path), "--ready-fd", str(ready_fd)]


def _failure(paths: CoopPaths, reason: str) -> DaemonStartError:
    log_path = RunLayout(paths).daemon_log
    tail = log_tail(log_path)
    return DaemonStartError(
        f"daemon failed to start: {reason} (log: {display_path(log_path)})", log_tail=tail)


def _wait_ready(read_fd: int, deadline: float) -> bool | None:
    """True on the daemon's ready byte, False on end of file (it died), None on timeout."""
    import select
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        readable, _, _ = select.select([read_fd], [], [], remaining)
        if readable:
            return os.read(read_fd, 1) == b"1"


def start_daemon(paths: CoopPaths, socket_path: Path, *,
                 timeout: float = START_TIMEOUT) -> None:
    """Start a detached daemon and wait until it is bound; raises ``DaemonStartError``.

    ``COOP_HOME`` and its logs must exist (``prepare_home``, done by ``ensure_daemon``).
    """
    import subprocess  # only when starting one: keeps a plain ``coop ls`` light
    log_path = RunLayout(paths).daemon_log
    read_fd, write_fd = os.pipe()
    try:
        try:
            log_fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                             0o600)
        except OSError as exc:
            raise _failure(paths, f"cannot open {display_path(log_path)}: "
                                  f"{exc.strerror or exc}") from exc
        try:
            proc = subprocess.Popen(
                daemon_argv(socket_path, write_fd),
                stdin=subprocess.DEVNULL, stdout=log_fd, stderr=log_fd,
                pass_fds=(write_fd,), start_new_session=True, close_fds=True,
                cwd="/",
            )
        except OSError as exc:
            raise _failure(paths, f"cannot run {sys.executable}: {exc}") from exc
        finally:
            os.close(log_fd)
        os.close(write_fd)
        write_fd = -1
        deadline = time.monotonic() + timeout
        # The first child forks the daemon and exits at once: reap it (no zombie).
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise _failure(paths, "it did not detach") from None
        if code != 0:
            raise _failure(paths, f"it exited with code {code}")
        ready = _wait_ready(read_fd, deadline)
    finally:
        os.close(read_fd)
        if write_fd >= 0:
            os.close(write_fd)
    if ready is None:
        raise _failure(paths, f"no socket after {timeout:g}s")
    if not ready:
        raise _failure(paths, "it exited")


def connect(socket_path: Path) -> Client | None:
    """A client of the running daemon, or None when nobody listens (never spawns)."""
    try:
        return Client.connect(socket_path)
    except DaemonUnavailableError:
        return None


def ensure_daemon(paths: CoopPaths, socket_path: Path) -> Client:
    """A connected client, starting the daemon first if none listens (SPEC 5)."""
    client = connect(socket_path)
    if client is not None:
        return client
    prepare_home(paths)
    with _locked(RunLayout(paths).daemon_lock):
        client = connect(socket_path)
        if client is not None:
            return client
        log.debug("starting the daemon on %s", socket_path)
        start_daemon(paths, socket_path)
    try:
        return Client.connect(socket_path)
    except DaemonUnavailableError as exc:
        raise _failure(paths, "it stopped listening right after start-up") from exc
