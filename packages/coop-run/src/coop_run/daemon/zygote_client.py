"""The daemon's side of the session starter (``coop_run.session.zygote``): run it, hand it
launches, read each supervisor's start-up reply.

Kept apart from the zygote so that the daemon, which starts one at once, does not import
the supervisor and sandbox stack: a cold ``coop`` command waits for the daemon's
imports. It imports the pure configuration and launch modules only.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from coop_run.errors import SupervisorError
from coop_run.layout import SessionDir
from coop_run.session.config import SupervisorConfig
from coop_run.session.launch import (
    MAX_LAUNCH,
    START_TIMEOUT,
    SupervisorHandle,
    encode_launch,
    parse_reply,
)

logger = logging.getLogger("coop_run.session.zygote")  # its events read as the zygote's

READY_TIMEOUT = 10.0  # the zygote's own start (an interpreter and its imports)
STOP_TIMEOUT = 2.0    # for the zygote to end when the daemon does


class ZygoteClient:
    """The daemon's handle on its zygote: started at once, restarted if it dies."""

    def __init__(self, log_file: Path, environ: Mapping[str, str] | None = None) -> None:
        self.log_file = log_file
        self.environ = dict(os.environ if environ is None else environ)
        self._proc: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        self._ready: asyncio.Future[None] | None = None

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def start(self) -> None:
        """Run the zygote (its imports proceed while the daemon serves)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            argv = [sys.executable, "-m", "coop_run.session.zygote", "--fd", str(theirs.fileno()),
                    "--parent", str(os.getpid()), "--log", str(self.log_file)]
            self._proc = subprocess.Popen(
                argv, pass_fds=(theirs.fileno(),), env=self.environ, start_new_session=True,
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        except OSError as exc:
            ours.close()
            raise SupervisorError(f"cannot run the session starter: {exc}") from exc
        finally:
            theirs.close()
        ours.setblocking(False)
        self._sock = ours
        self._ready = None
        logger.info("session starter (zygote) started, pid %d", self._proc.pid)

    async def _wait_ready(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(READY_TIMEOUT):
                data = await loop.sock_recv(sock, 4096)
        except TimeoutError:
            raise SupervisorError(
                f"the session starter was not ready within {READY_TIMEOUT:g}s") from None
        if data != b'{"ready":true}':
            raise SupervisorError("the session starter exited while starting (see daemon.log)")

    async def launch(self, config: SupervisorConfig, *, network: str, coop_home: Path,
                     timeout: float = START_TIMEOUT) -> SupervisorHandle:
        """Start one session's supervisor; returns once its agent runs."""
        payload = encode_launch(config, network=network, coop_home=coop_home)
        if len(payload) > MAX_LAUNCH:
            raise SupervisorError("the session's configuration is too large")
        sock = await self._connected()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            try:
                socket.send_fds(sock, [payload], [theirs.fileno()])
            except BlockingIOError:  # many launches queued: it is alive, only behind
                raise SupervisorError("the session starter is busy; try again") from None
            except OSError as exc:
                if exc.errno == errno.EMSGSIZE:  # a smaller buffer than MAX_LAUNCH assumes
                    raise SupervisorError("the session's configuration is too large") from None
                self._forget()  # a dead zygote; the next launch starts another
                raise SupervisorError(f"the session starter is gone: {exc}") from exc
            finally:
                theirs.close()
            ours.setblocking(False)
            pid = parse_reply(await _read_reply(ours, timeout))
        finally:
            ours.close()
        session_dir = config.session_dir
        return SupervisorHandle(pid=pid, socket_path=SessionDir(session_dir).supervisor_socket,
                                state_path=SessionDir(session_dir).supervisor_state)

    async def _connected(self) -> socket.socket:
        if self._proc is not None and self._proc.poll() is not None:
            logger.warning("the session starter exited (%s); starting another",
                           self._proc.returncode)
            self._forget()
        if self._sock is None:
            self.start()
        sock = self._sock
        assert sock is not None
        if self._ready is None:
            self._ready = asyncio.ensure_future(self._wait_ready(sock))
        try:
            await asyncio.shield(self._ready)
        except SupervisorError:
            self._forget()
            raise
        return sock

    def _forget(self, *, grace: float = 0.0) -> None:
        """Drop the zygote: close our end (it exits), give it ``grace`` seconds, kill it
        and reap it. A failed one gets no grace: the daemon's loop must not wait on it."""
        if self._ready is not None and not self._ready.done():
            self._ready.cancel()
        self._ready = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        proc, self._proc = self._proc, None
        if proc is not None:
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def close(self) -> None:
        """The daemon ends: the zygote and its spare exit; supervisors stay."""
        self._forget(grace=STOP_TIMEOUT)


async def _read_reply(sock: socket.socket, timeout: float) -> bytes:
    """The supervisor's one-line start-up reply (``launch.parse_reply``)."""
    loop = asyncio.get_running_loop()
    data = b""
    try:
        async with asyncio.timeout(timeout):
            while not data.endswith(b"\n"):
                chunk = await loop.sock_recv(sock, 4096)
                if not chunk:
                    raise SupervisorError("the supervisor exited while starting")
                data += chunk
    except TimeoutError:
        raise SupervisorError(f"the supervisor did not start within {timeout:g}s") from None
    return data
