"""The session starter: a small process that forks supervisors for the daemon.

The daemon carries pydantic, coop_build and every session's bookkeeping: a supervisor
forked from it starts slower (page tables and copy-on-write faults of a large heap) and
keeps more private memory. So the daemon runs ``python -m coop_run.session.zygote`` once, at its
own start; the zygote imports only what a supervisor and its sandbox need, freezes that
heap (``gc.freeze``: the children's collections never touch it) and keeps one *spare*
child forked in advance. A ``launch`` hands the session's configuration to the spare,
which becomes that session's supervisor (``session.process.run_supervisor``); the zygote
forks the next spare once it is idle again, off the path of any request.

    daemon --SEQPACKET: launch JSON + reply fd--> zygote --the same--> spare = supervisor
    supervisor --reply fd: {"pid"} or {"error"}--> daemon

The zygote is the supervisors' parent and reaps them; they are each in their own session
(``setsid``), so neither the daemon's nor the zygote's end touches them. The zygote ends
with the daemon: end of file on its socket, or ``PR_SET_PDEATHSIG`` when the daemon is
killed; an unused spare goes with the zygote the same way.

The request's wire format is ``coop_run.session.launch`` (pure, tested without processes); the
daemon's side is ``coop_run.daemon.zygote_client``.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import logging
import os
import select
import signal
import socket
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from coop_build import linux
from coop_build.errors import CoopBuildError
from coop_build.idmap import IdMap, choose_idmap
from coop_build.paths import CoopPaths
from coop_run import proctitle
from coop_run.errors import CoopError, SandboxError
from coop_run.ipc import schema
from coop_run.sandbox import initexe
from coop_run.sandbox.clone import PreparedInit, prepare_init
from coop_run.sandbox.network.modes import network_for
from coop_run.session.launch import MAX_LAUNCH, decode_launch, failed_reply
from coop_run.session.process import drop_inherited, run_supervisor

logger = logging.getLogger("coop_run.session.zygote")  # also under "python -m"

SPARE_IDLE = 0.05            # seconds without requests before the next spare is forked
STOP_TIMEOUT = 2.0           # for an unused spare to end
_PRELOADED: frozenset[str] | None = None  # what _preload() imported (None: not the zygote)


# --- the zygote process -----------------------------------------------------------------


class _Zygote:
    """Forks spares, hands each launch to one, reaps what it forked."""

    def __init__(self, sock: socket.socket, idmap: IdMap | None) -> None:
        self.sock = sock
        self.idmap = idmap  # chosen once here, not in every spare (its pages stay shared)
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.spare: tuple[int, socket.socket] | None = None
        self.children: set[int] = set()

    def serve(self) -> None:
        signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)
        signal.signal(signal.SIGCHLD, lambda _signum, _frame: None)
        self.spare = self._fork_spare()
        while True:
            idle = None if self.spare is not None else SPARE_IDLE
            readable, _, _ = select.select([self.sock.fileno(), self.wake_r], [], [], idle)
            if self.wake_r in readable:
                with contextlib.suppress(BlockingIOError):
                    while os.read(self.wake_r, 512):
                        pass
                self._reap()
            if self.sock.fileno() in readable:
                try:
                    data, fds, _flags, _addr = socket.recv_fds(self.sock, MAX_LAUNCH, 1)
                except OSError:
                    return
                if not data:
                    return  # the daemon is gone
                self._hand_over(data, fds)
            elif not readable and self.spare is None:
                self.spare = self._fork_spare()

    def close(self) -> None:
        """Ending: the spare sees end of file on its channel, ends its waiting init and
        exits; wait for that (bounded), so nothing of ours outlives the daemon's wait."""
        if self.spare is None:
            return
        pid, channel = self.spare
        self.spare = None
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            return
        try:
            channel.close()
            if not select.select([pidfd], [], [], STOP_TIMEOUT)[0]:
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        finally:
            os.close(pidfd)

    def _hand_over(self, data: bytes, fds: list[int]) -> None:
        try:
            for _attempt in range(2):
                if self.spare is None:
                    self.spare = self._fork_spare()
                pid, channel = self.spare
                self.spare = None
                try:
                    socket.send_fds(channel, [data], fds)
                except OSError as exc:  # it died unused: use a fresh one
                    logger.warning("spare %d is gone (%s)", pid, exc)
                    continue
                finally:
                    channel.close()
                return
            for fd in fds:
                _reply_error(fd, "the session starter cannot fork a supervisor")
        finally:
            for fd in fds:
                os.close(fd)

    def _fork_spare(self) -> tuple[int, socket.socket]:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        zygote = os.getpid()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child never returns
            ours.close()
            _spare_main(theirs, zygote, self.idmap)
        theirs.close()
        self.children.add(pid)
        return pid, ours

    def _reap(self) -> None:
        for pid in list(self.children):
            with contextlib.suppress(ChildProcessError):
                done, _status = os.waitpid(pid, os.WNOHANG)
                if done == 0:
                    continue
            self.children.discard(pid)
            if self.spare is not None and self.spare[0] == pid:
                self.spare[1].close()
                self.spare = None


def _reply_error(fd: int, message: str) -> None:
    with contextlib.suppress(OSError):
        os.write(fd, failed_reply(message))


def _spare_main(channel: socket.socket, zygote: int, idmap: IdMap | None) -> NoReturn:
    """A spare: wait for one launch, then become that session's supervisor.

    Everything it runs is imported by the zygote (module level): an import here would
    cost every session its time and a private copy of the module.
    """
    code = 1
    try:
        os.setsid()
        linux.set_pdeathsig(signal.SIGKILL)  # an unused spare goes with the zygote
        if os.getppid() != zygote:
            os._exit(0)
        # Everything that does not depend on the session, done before it is known: the
        # sandbox's init is cloned first, while this heap is still the zygote's (what
        # we write later stays shared with the zygote, not private to the init).
        prepared: PreparedInit | None = None
        try:
            if idmap is not None:
                prepared = prepare_init(idmap, unshare_net=True)  # all modes but "host"
        except (CoopError, CoopBuildError, OSError) as exc:
            logger.warning("spare: no init prepared (%s)", exc)  # the start reports it
        keep = [channel.fileno()]
        with contextlib.suppress(SandboxError):  # missing: the start reports it
            keep.append(initexe.exe_fd())  # the zygote's copy: one for every session
        if prepared is not None:
            keep += [prepared.sock.fileno(), prepared.pidfd]
        drop_inherited(keep)
        data, fds, _flags, _addr = socket.recv_fds(channel, MAX_LAUNCH, 1)
        channel.close()
        if not data or len(fds) != 1:
            if prepared is not None:
                prepared.discard()
            os._exit(0)
        linux.set_pdeathsig(0)  # from here on the session outlives zygote and daemon
        reply_fd = fds[0]
        try:
            config, mode, home = decode_launch(data)
            config.sandbox.network = network_for(mode, session=config.sandbox.name,
                                                 paths=CoopPaths(home),
                                                 proxies=config.sandbox.proxies)
            config.sandbox.idmap = idmap
        except Exception as exc:
            message = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
            _reply_error(reply_fd, str(message))
            os._exit(1)
        run_supervisor(config, reply_fd, inherited_dropped=True, prepared=prepared,
                       preloaded=_PRELOADED)
    except BaseException:  # pragma: no cover - reported through the reply fd or the log
        logger.exception("spare supervisor failed")
    finally:
        os._exit(code)


def _preload() -> None:
    """Freeze the heap of what supervisors need (imported above, every network mode
    included, and every wire message's checks worked out): the spares share it."""
    global _PRELOADED  # noqa: PLW0603 - set once, before any spare is forked
    _PRELOADED = frozenset(sys.modules)
    schema.prepare_all()
    gc.collect()
    gc.freeze()


def _parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m coop_run.session.zygote",
                                     description="coop's session starter (run by the daemon).")
    parser.add_argument("--fd", type=int, required=True, help="the daemon's SEQPACKET socket")
    parser.add_argument("--parent", type=int, required=True, help="the daemon's pid")
    parser.add_argument("--log", type=Path, required=True, help="log file (appended)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    started = time.monotonic()
    proctitle.set_title(proctitle.ZYGOTE)  # before _preload: its spares inherit the module
    args = _parse_args(sys.argv[1:] if argv is None else argv)
    handler = logging.FileHandler(args.log, encoding="utf-8")
    handler.setFormatter(logging.Formatter(
        "%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.INFO)
    linux.set_pdeathsig(signal.SIGKILL)
    if os.getppid() != args.parent:
        return 0  # the daemon died before we could follow it
    sock = socket.socket(fileno=args.fd)
    _preload()
    try:
        idmap: IdMap | None = choose_idmap()
    except CoopBuildError as exc:
        logger.warning("no id map (%s): each sandbox reports it", exc)
        idmap = None
    try:  # made here, so that every sandbox's init execs the same pages
        initexe.exe_fd()
    except SandboxError as exc:
        logger.warning("%s", exc)  # each sandbox start reports it
    zygote = _Zygote(sock, idmap)
    sock.send(b'{"ready":true}')
    logger.info("zygote ready in %.0f ms", (time.monotonic() - started) * 1000)
    try:
        zygote.serve()
    finally:
        zygote.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
