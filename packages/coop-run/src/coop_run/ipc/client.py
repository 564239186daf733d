"""The CLI's synchronous daemon client (SPEC 6): connect, handshake, request/response.

No asyncio on purpose: ``coop ls`` must cost little more than starting Python, and a
blocking socket with a timeout is all a one-shot request needs.
"""

from __future__ import annotations

import contextlib
import socket
from pathlib import Path
from types import TracebackType
from typing import TypeVar

from coop_run.errors import DaemonError, DaemonUnavailableError, ProtocolError
from coop_run.ipc import protocol
from coop_run.ipc.framing import DecodeError, FrameDecoder, Message, encode_message
from coop_run.ipc.schema import encode
from coop_run.ipc.sockets import connect_unix

CONNECT_TIMEOUT = 2.0
REQUEST_TIMEOUT = 60.0
_RECV_SIZE = 65536
RP = TypeVar("RP", bound=protocol.Reply)


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

    def wait(self) -> Message:
        """The next message, however long it takes (a foreground ``coop serve``)."""
        self._sock.settimeout(None)
        return self.receive()

    def request(self, command: Message) -> Message:
        """Send one command as given and return its ``ok`` response untyped; raises for
        ``ok: false`` (tests use it to send what no typed request would)."""
        self.send(command)
        response = self.receive()
        if response.get("ok") is not True:
            raise protocol.refusal(response)
        return response

    def call(self, request: protocol.Request, answer: type[RP]) -> RP:
        """Send ``request`` and return its answer as ``answer``; raises the peer's refusal
        (``protocol.refusal``) or ``ProtocolError`` for an answer that is not one."""
        self.send(encode(request))
        return protocol.decode_reply(answer, self.receive())

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
