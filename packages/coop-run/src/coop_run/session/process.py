"""The supervisor as a process: started by a fork (``start_supervisor``) or from a
zygote's spare (``run_supervisor``), detached from what it inherited, logging to the
session's file, replying once its agent runs, then serving until the session ends.

``start_supervisor`` forks twice, with ``setsid()`` between, so nobody has to reap it and
a dead starter leaves it running (tests and tools use it; the daemon goes through
``coop_run.session.zygote``). Either way the reply on the pipe or socket is
``coop_run.session.launch``'s one line of JSON.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import select
import signal
import sys
import time
from collections.abc import Collection
from typing import NoReturn

from coop_run import proctitle
from coop_run.errors import CoopError, SupervisorError
from coop_run.layout import SessionDir
from coop_run.sandbox.clone import PreparedInit, close_other_fds
from coop_run.session.config import SupervisorConfig
from coop_run.session.launch import (
    START_TIMEOUT,
    SupervisorHandle,
    failed_reply,
    parse_reply,
    started_reply,
)
from coop_run.session.supervisor import Supervisor

logger = logging.getLogger(__name__)


def start_supervisor(config: SupervisorConfig, *,
                     timeout: float = START_TIMEOUT) -> SupervisorHandle:
    """Fork the supervisor and return once its socket is ready and the agent runs.

    Call from a process with no other threads (the sandbox is cloned from the child).
    Raises ``SupervisorError`` with the child's own message when it fails to start.
    """
    session_dir = config.session_dir
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child never returns
        code = 1
        try:
            os.close(read_fd)
            os.setsid()
            if os.fork() == 0:
                run_supervisor(config, write_fd)
            code = 0
        finally:
            os._exit(code)
    os.close(write_fd)
    try:
        with contextlib.suppress(ChildProcessError):  # a SIGCHLD handler may reap it first
            os.waitpid(pid, 0)
        reply = _read_reply(read_fd, timeout)
    finally:
        os.close(read_fd)
    return SupervisorHandle(pid=parse_reply(reply),
                            socket_path=SessionDir(session_dir).supervisor_socket,
                            state_path=SessionDir(session_dir).supervisor_state)


def _read_reply(fd: int, timeout: float) -> bytes:
    deadline = time.monotonic() + timeout
    data = b""
    while not data.endswith(b"\n"):
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
            raise SupervisorError(f"the supervisor did not start within {timeout:g}s")
        chunk = os.read(fd, 4096)
        if not chunk:
            raise SupervisorError("the supervisor exited while starting")
        data += chunk
    return data


_DETACHED_HANDLERS: list[logging.Handler] = []


def drop_inherited(keep: Collection[int]) -> None:
    """Drop what a fork inherits from its starter: fds (but ``keep``), signal handlers,
    stdin. A zygote's spare does this before it knows its session."""
    gc.freeze()  # the parent's cyclic garbage may wrap fds closed below: never finalise it
    # The parent's log handlers write to descriptors closed below, whose numbers the next
    # socket takes: detach them (kept referenced: finalising one closes its number).
    root = logging.getLogger()
    _DETACHED_HANDLERS.extend(root.handlers)
    root.handlers = []
    signal.set_wakeup_fd(-1)
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
        signal.signal(signum, signal.SIG_DFL)
    close_other_fds(keep)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)


def _log_to(config: SupervisorConfig) -> None:
    """stdout, stderr and logging to the session's log file (or nowhere)."""
    if config.log_file is not None:
        config.log_file.parent.mkdir(parents=True, exist_ok=True)
        out = os.open(config.log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    else:
        out = os.open(os.devnull, os.O_WRONLY)
    os.dup2(out, 1)
    os.dup2(out, 2)
    os.close(out)
    root = logging.getLogger()
    root.handlers = []
    if config.log_file is not None:
        handler = logging.StreamHandler(open(2, "w", closefd=False))  # noqa: SIM115
        handler.setFormatter(logging.Formatter(
            f"%(asctime)s supervisor[{os.getpid()}] %(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
        root.setLevel(logging.INFO)


def _start(config: SupervisorConfig, prepared: PreparedInit | None,
           reply_fd: int) -> Supervisor | None:
    """Start the session and reply on ``reply_fd``: its pid, or (returning None) the
    one-line error that any step of the start failed with."""
    supervisor: Supervisor | None = None
    try:
        _log_to(config)
        supervisor = Supervisor(config, prepared=prepared)
        supervisor.prepare()
    except BaseException as exc:
        message = exc.message if isinstance(exc, CoopError) else f"{type(exc).__name__}: {exc}"
        logger.error("supervisor start failed: %s", message)
        if supervisor is not None:
            supervisor.cleanup()
        os.write(reply_fd, failed_reply(message))
        return None
    os.write(reply_fd, started_reply(os.getpid()))
    os.close(reply_fd)
    return supervisor


def run_supervisor(config: SupervisorConfig, reply_fd: int, *, inherited_dropped: bool = False,
                   prepared: PreparedInit | None = None,
                   preloaded: frozenset[str] | None = None) -> NoReturn:
    """The supervisor process from fork to exit (a fork of ``start_supervisor`` or a
    zygote's spare, which has already called ``drop_inherited``): start the session,
    reply on ``reply_fd``, serve until killed.

    ``preloaded``: the modules the zygote imported. Any other module this session
    imports costs each session its time and a private copy; it is logged at the end.
    """
    code = 1
    try:
        proctitle.set_title(proctitle.supervisor(config.sandbox.name))
        if not inherited_dropped:
            drop_inherited((reply_fd,))
        supervisor = _start(config, prepared, reply_fd)
        if supervisor is not None:
            asyncio.run(supervisor.serve())
            code = 0
    except BaseException:
        logger.exception("supervisor failed")
    finally:
        if preloaded is not None and (late := sorted(set(sys.modules) - preloaded)):
            logger.warning("imported after the zygote's preload: %s", ", ".join(late))
        logging.shutdown()
        os._exit(code)
