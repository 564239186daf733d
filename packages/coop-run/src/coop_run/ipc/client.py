"""The CLI's synchronous daemon client (SPEC 6): connect, handshake, request/response.

No asyncio on purpose: ``coop ls`` must cost little more than starting Python, and a
blocking socket with a timeout is all a one-shot request needs.
"""

from __future__ import annotations

import contextlib
import socket
from pathlib import Path
from types import TracebackType

from coop_run.errors import (
    DaemonError,
    DaemonUnavailableError,
    ProtocolError,
    RemoteError,
    SessionNotFoundError,
)
from coop_run.ipc import protocol
from coop_run.ipc.framing import DecodeError, FrameDecoder, Message, encode_message
from coop_run.ipc.sockets import connect_unix

CONNECT_TIMEOUT = 2.0
REQUEST_TIMEOUT = 60.0
_RECV_SIZE = 65536


def remote_error(response: Message) -> RemoteError:
    """The exception for an ``{"ok": false}`` response (its code decides the exit code)."""
    code = response.get("error")
    message = response.get("message")
    code = code if isinstance(code, str) else "INTERNAL_ERROR"
    text = message if isinstance(message, str) and message else code
    if code == protocol.SESSION_NOT_FOUND:
        return SessionNotFoundError(text)
    return RemoteError(text, code=code)


class Client:
    """One connection to the daemon (or a supervisor: ``what``), past the handshake."""

    def __init__(self, sock: socket.socket, path: Path, what: str = "daemon") -> None:
        self._sock = sock
        self.path = path
        self.what = what
        self._decoder = FrameDecoder()
        self._pending: list[Message | DecodeError] = []

    @classmethod
    def connect(cls, path: Path, *, timeout: float = CONNECT_TIMEOUT,
                request_timeout: float = REQUEST_TIMEOUT, what: str = "daemon") -> Client:
        """Connect and handshake; ``DaemonUnavailableError`` if nobody listens.

        ``what`` names the listener in errors: a supervisor's socket speaks the same
        handshake (the daemon probing sessions at start-up).
        """
        sock = connect_unix(path, timeout, what=what)
        client = cls(sock, path, what)
        try:
            sock.settimeout(timeout)
            client.send(protocol.hello())
            protocol.check_handshake_reply(client.receive())
            sock.settimeout(request_timeout)
        except DaemonError as exc:
            # Hung up before answering: a daemon on its way out (idle exit, shutdown).
            client.close()
            raise DaemonUnavailableError(f"the {what} on {path} hung up: {exc}") from exc
        except BaseException:
            client.close()
            raise
        return client

    def send(self, message: Message) -> None:
        try:
            self._sock.sendall(encode_message(message))
        except OSError as exc:
            raise DaemonError(f"lost the connection to the {self.what}: {exc}") from exc

    def receive(self) -> Message:
        """The next message; ``DaemonError`` if the peer hangs up."""
        while not self._pending:
            try:
                data = self._sock.recv(_RECV_SIZE)
            except TimeoutError as exc:
                raise DaemonError(f"the {self.what} did not answer in time") from exc
            except OSError as exc:
                raise DaemonError(f"lost the connection to the {self.what}: {exc}") from exc
            if not data:
                raise DaemonError(f"the {self.what} closed the connection")
            self._pending.extend(self._decoder.feed(data))
        item = self._pending.pop(0)
        if isinstance(item, ProtocolError):
            raise ProtocolError(f"bad answer from the {self.what}: {item.message}",
                                code=item.code)
        return item

    def request(self, command: Message) -> Message:
        """Send one command and return its ``ok`` response; raises for ``ok: false``."""
        self.send(command)
        response = self.receive()
        if response.get("ok") is not True:
            raise remote_error(response)
        return response

    def wait_closed(self, timeout: float) -> None:
        """Block until the daemon closes this connection (after ``shutdown``)."""
        self._sock.settimeout(timeout)
        with contextlib.suppress(OSError):
            while self._sock.recv(_RECV_SIZE):
                pass

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
