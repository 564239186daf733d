"""A PTY's WebSocket (SPEC 8): ``/ws?session=&pty=[&offset=][&cols=&rows=][&size=0]``
(``size=0``: join as "do not size for me"; the default, ``size=1``, sizes).

The daemon is a client of the session's supervisor like ``coop attach`` is: each
WebSocket gets its own supervisor stream (``attach`` with ``kind: web``, the token's
``read_only`` and the client's ``sizing``), and this module relays between the two. So
a web client is exactly a slow or fast client of the supervisor's ``FanOut``: when the
browser does not keep up, the relay stops reading the supervisor's socket, the
supervisor drops that client's backlog (``lagged``, then a redraw nudge), and neither
the PTY nor any other client waits. What the supervisor has sent by the time the relay
reads goes out as one binary frame (small PTY reads coalesce under load, a keystroke's
echo goes alone). ``pause``/``resume`` (xterm.js's watermarks) stop and restart the
reading for this client only. The input filter, read-only and window-size rules are the
supervisor's, so they hold for every client kind alike: what the window rule needs to
hear (``resize``, ``visibility``, ``active``, ``sizing``) is relayed to it as sent, and
typing reaches it as input.

Frames: binary = terminal bytes both ways; text = JSON: from the browser ``resize``,
``{"type": "visibility", "visible": bool}`` (the tab was hidden or shown),
``{"type": "active"}`` (focus, pointer or touch without typing), ``{"type": "sizing",
"sizing": bool}`` ("do not size for me" off or on), ``pause``, ``resume``, ``detach``;
from the server first ``attached`` (the offset to count from), then the supervisor's
events (``pty_exited``, ``pty_restarting``, ``lagged``, ``detached``, ``blocked``,
``notice``, ``attention``). A resume with ``offset`` gets exactly the bytes missed while
the scrollback holds them, else a ``lagged`` event for the gap and a redraw.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from typing import cast

from aiohttp import WSMsgType, web

from coop_run.errors import CoopError, ProtocolError
from coop_run.ipc import protocol
from coop_run.ipc.connection import open_stream
from coop_run.ipc.framing import (
    MAX_FRAME_SIZE,
    Control,
    Data,
    StreamDecoder,
    StreamItem,
    encode_control,
    encode_data,
    parse_json_object,
)
from coop_run.ipc.schema import decode, encode
from coop_run.web.clients import WebClient
from coop_run.web.context import WebContext

logger = logging.getLogger(__name__)

RECV_SIZE = 256 * 1024   # what the relay holds from the supervisor before it stops reading
MAX_INPUT = MAX_FRAME_SIZE - 1  # a binary frame from the browser: one stream frame at most
OPEN_TIMEOUT = 10.0


def _int(query: dict[str, str], name: str, *, lowest: int = 0) -> int | None:
    text = query.get(name)
    if text is None or text == "":
        return None
    if not text.isdigit() or int(text) < lowest:
        raise CoopError(f"{name} must be a whole number of at least {lowest}",
                        code=protocol.INVALID_COMMAND)
    return int(text)


def attach_request(query: dict[str, str], *, read_only: bool,
                   ) -> tuple[str, protocol.SupervisorAttach]:
    """The session named and the supervisor's ``attach`` for a ``/ws`` URL's query."""
    session = query.get("session")
    if not session:
        raise CoopError("session is required", code=protocol.INVALID_COMMAND)
    size = query.get("size", "1")
    if size not in ("0", "1"):
        raise CoopError("size must be 0 or 1", code=protocol.INVALID_COMMAND)
    pty = _int(query, "pty")
    request = protocol.SupervisorAttach(
        pty=0 if pty is None else pty, cols=_int(query, "cols", lowest=1),
        rows=_int(query, "rows", lowest=1), resume_from=_int(query, "offset"), kind="web",
        read_only=read_only or None, sizing=None if size == "1" else False)
    return session, request


async def terminal_socket(context: WebContext, request: web.Request,
                          read_only: bool) -> web.StreamResponse:
    """Open the supervisor stream, then upgrade and relay until either side ends."""
    try:
        name, attach = attach_request(dict(request.query), read_only=read_only)
        session = context.registry.find(name)
    except CoopError as exc:
        return context.refusal(protocol.error_from(exc))
    ws = web.WebSocketResponse(heartbeat=context.heartbeat, max_msg_size=MAX_INPUT,
                               compress=False)
    if not ws.can_prepare(request).ok:  # refused before it costs the session an attach
        return context.refusal(protocol.error(protocol.INVALID_COMMAND,
                                              "a WebSocket upgrade is required"))
    try:
        sock, reply = await open_stream(session.socket_path, encode(attach),
                                        what="supervisor", timeout=OPEN_TIMEOUT)
    except (OSError, TimeoutError, ProtocolError) as exc:
        return context.refusal(protocol.error(
            protocol.SESSION_NOT_FOUND,
            f"session {name!r} is not answering ({type(exc).__name__})"))
    if reply.get("ok") is not True:
        sock.close()
        return context.refusal(reply)
    try:
        answer = decode(protocol.AttachReply, reply)
    except ProtocolError:
        sock.close()
        raise
    client = WebClient(ws, request.remote or "?", read_only, "terminal", session=name,
                       pty=answer.pty)
    context.clients.add(client)
    inbox: Inbox | None = None
    try:
        await ws.prepare(request)
        await ws.send_str(json.dumps(encode(protocol.Attached(
            pty=answer.pty, offset=answer.offset, cols=answer.cols, rows=answer.rows,
            session=answer.session, read_only=read_only))))
        _, inbox = await asyncio.get_running_loop().connect_accepted_socket(Inbox, sock)
        await Relay(ws, inbox, client).run()
    finally:
        if inbox is not None:
            inbox.close()  # its transport owns the socket
        else:
            sock.close()
        context.clients.remove(client)
    return ws


class Inbox(asyncio.Protocol):
    """The daemon's end of one supervisor stream, as an asyncio protocol.

    The event loop reads the socket whenever bytes arrive (one registration for the
    stream's life, not one per read: a 4 KiB PTY read per wake-up is what a burst looks
    like here), and what arrived waits until the relay takes all of it at once: the more
    the browser's pace lets pile up, the fewer and larger the frames. Reading stops while
    ``RECV_SIZE`` bytes wait, so a slow browser makes the supervisor queue, and then drop,
    for this client alone.
    """

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._chunks: list[bytes] = []
        self._size = 0
        self._ended = False
        self._held = False  # reading paused by us, until the relay takes what waits
        self._waiter: asyncio.Future[None] | None = None
        self._writable = asyncio.Event()
        self._writable.set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._chunks.append(data)
        self._size += len(data)
        if self._size >= RECV_SIZE and not self._held and self.transport is not None:
            self._held = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> None:
        self._ended = True  # returning None: the transport closes itself
        self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self._ended = True
        self._writable.set()
        self._wake()

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def read(self) -> bytes:
        """Everything received and not yet taken, once there is some; b"" at the end."""
        while not self._chunks:
            if self._ended:
                return b""
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        chunks = self._chunks
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self._chunks = []
        self._size = 0
        if self._held and self.transport is not None:
            self._held = False
            self.transport.resume_reading()
        return data

    async def write(self, data: bytes) -> None:
        """Send ``data`` to the supervisor; waits while the socket's buffer is full."""
        if self.transport is None or self.transport.is_closing():
            raise ConnectionError("the supervisor's stream is closed")
        self.transport.write(data)
        await self._writable.wait()

    def close(self) -> None:
        """Close the socket now: input not yet sent is of no use once the relay ends."""
        if self.transport is not None:
            self.transport.abort()


class Relay:
    """Bytes and controls between one WebSocket and its supervisor stream."""

    def __init__(self, ws: web.WebSocketResponse, inbox: Inbox, client: WebClient) -> None:
        self.ws = ws
        self.inbox = inbox
        self.client = client
        self._running = asyncio.Event()  # clear while the browser has paused us
        self._running.set()

    async def run(self) -> None:
        """Relay until the browser or the supervisor hangs up; both sides end."""
        down = asyncio.get_running_loop().create_task(self._down())
        try:
            await self._up()
        finally:
            down.cancel()
            await asyncio.gather(down, return_exceptions=True)

    async def _down(self) -> None:
        """Supervisor -> browser: what has arrived, as fast as the browser takes it."""
        decoder = StreamDecoder()
        try:
            while True:
                await self._running.wait()
                data = await self.inbox.read()
                if not data:
                    break
                if not await self._forward(decoder.feed(data)):
                    break
        except (OSError, ConnectionError) as exc:
            logger.debug("%s: relay ended: %s", self.client.describe(), exc)
        await self.ws.close()

    async def _forward(self, items: Sequence[StreamItem]) -> bool:
        """Send one read's frames: joined bytes, events as text; False at the end."""
        pending: list[bytes] = []
        for item in items:
            if isinstance(item, Data):
                pending.append(item.data)
                continue
            if pending:
                await self._send_bytes(pending)
                pending = []
            if isinstance(item, Control):
                await self.ws.send_str(json.dumps(item.message, ensure_ascii=False))
                if item.message.get("event") == protocol.Detached.TAG:
                    return False
            else:
                logger.warning("%s: bad frame from the supervisor: %s",
                               self.client.describe(), item.message)
                return False
        if pending:
            await self._send_bytes(pending)
        return True

    async def _send_bytes(self, chunks: list[bytes]) -> None:
        """One binary frame of ``chunks``: a lone chunk (the usual read) goes as it is,
        without a copy; several are joined once."""
        await self.ws.send_bytes(chunks[0] if len(chunks) == 1 else b"".join(chunks))

    async def _up(self) -> None:
        """Browser -> supervisor, until the browser closes (or is closed by ``_down``)."""
        try:
            async for message in self.ws:
                if message.type == WSMsgType.BINARY:
                    await self.inbox.write(encode_data(message.data))
                elif message.type == WSMsgType.TEXT:
                    if not await self._control(message.data):
                        return
                else:  # an error: the heartbeat found no pong, or the connection broke
                    return
        except OSError as exc:  # the supervisor hung up while the browser typed
            logger.debug("%s: relay ended: %s", self.client.describe(), exc)

    async def _control(self, text: str) -> bool:
        """One JSON control from the browser; False when it detaches."""
        try:
            value = parse_json_object(text.encode())
            if isinstance(value, ProtocolError):
                raise value
            command = protocol.parse_control(value, protocol.WEB_CONTROLS)
        except ProtocolError as exc:
            await self.ws.send_str(json.dumps(encode(protocol.StreamError(exc.code,
                                                                          exc.message))))
            return True
        if isinstance(command, protocol.Pause):
            self._running.clear()
        elif isinstance(command, protocol.Resume):
            self._running.set()
        elif isinstance(command, protocol.Detach):
            return False
        else:  # resize, visibility, active, sizing: the supervisor's window rule
            await self.inbox.write(encode_control(encode(command)))
        return True
