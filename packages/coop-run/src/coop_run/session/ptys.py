"""One PTY of a session and its attached stream clients, on the supervisor's event loop.

A ``Pty`` holds the master fd of whatever process currently sits behind its id (the agent
is respawned behind id 0 with a new master), its ``Scrollback`` and ``FanOut``. Output is
read as soon as it is there and never waits for a client; a ``StreamClient`` is written to
only while its socket accepts more, taking from the FanOut one batch at a time, so a
client that stops reading only grows its FanOut backlog, which FanOut bounds (``lagged``).
Pure decisions (back-off, notices) are functions at the top, apart from the I/O.

Each chunk of output also goes through the PTY's ``Attention`` (SPEC 13): a bell, a
notification or silence after a burst marks the PTY, input from a client clears the mark,
and every client gets an ``attention`` event either way. Silence is watched with one
``loop.call_at`` timer per PTY, armed for when it would be due and re-armed from there
(never once per chunk).

Input from a web or tunnel client to the agent goes through its own ``InputFilter``
(SPEC 7.3): what it keeps from the PTY comes back to that client alone as ``blocked``
events and a ``notice``; held bytes are flushed by one timer per client. A read-only
client's input is dropped whole (one ``blocked`` event a second at most), and its resizes
too. A PTY calls ``on_change`` when what ``ls`` shows of it changes (state, clients,
attention), for the supervisor's ``watch``.

The window size follows ``session.sizing`` through the FanOut: a local terminal always
counts; a web or tunnel client while it is writable, sizing, visible and active. Its
typing (not a terminal's own reports), resizes and ``visibility``/``active``/``sizing``
controls are its activity; a read-only client's controls are accepted and change
nothing. A web client going idle changes the size with no event at all, so one
``loop.call_at`` timer per PTY is armed for the earliest expiry (``next_expiry``) and,
like the silence timer, re-armed from there rather than on every keystroke.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import itertools
import logging
import os
import socket
import struct
import termios
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from coop_run.errors import ProtocolError
from coop_run.inputfilter import InputFilter, Output
from coop_run.ipc import protocol
from coop_run.ipc.framing import (
    Control,
    Data,
    StreamDecoder,
    encode_control,
    encode_data,
    encode_message,
)
from coop_run.ipc.schema import encode
from coop_run.session.attention import Attention, is_report
from coop_run.session.config import (
    DEFAULT_CAPACITY,
    DEFAULT_MAX_BACKLOG,
    SILENCE_AFTER,
    SILENCE_BURST,
    WEB_IDLE,
)
from coop_run.session.fanout import FanOut
from coop_run.session.scrollback import Scrollback
from coop_run.session.termscan import Signal

logger = logging.getLogger(__name__)

READ_SIZE = 65536
READS_PER_WAKE = 16  # PTY reads gathered into one publish (64 KiB at most)
QUICK_EXIT = 2.0  # an agent that ran less than this counts as a quick exit
CRASH_LOOP_AFTER = 5  # quick exits in a row before the PTY is shown as crash-looping
REFUSED_EVERY = 1.0  # a read-only client hears that its input was dropped this often at most
CLIENT_KINDS = protocol.CLIENT_KINDS

_client_ids = itertools.count(1)


# --- pure decisions ---------------------------------------------------------------------


def exit_notice(code: int | None, signo: int | None) -> bytes:
    """What clients see when a PTY's process ends (SPEC 7.1)."""
    shown = code if code is not None else 128 + (signo or 0)
    return f"\r\n\x1b[2m[process exited (code {shown})]\x1b[0m\r\n".encode()


def restart_notice(delay_ms: int) -> bytes:
    return f"\x1b[2m[restarting in {delay_ms}ms...]\x1b[0m\r\n".encode()


@dataclass
class Backoff:
    """The agent's restart delay: doubles on each quick exit, resets after a real run."""

    base_ms: int
    max_ms: int
    streak: int = 0  # quick exits in a row

    def next_delay(self, ran: float) -> int:
        """The delay before the next start, given how long the last run lasted (s)."""
        if ran >= QUICK_EXIT:
            self.streak = 0
            return self.base_ms
        self.streak += 1
        if self.crash_looping:
            return self.max_ms
        return min(self.base_ms * (1 << (self.streak - 1)), self.max_ms)

    @property
    def crash_looping(self) -> bool:
        return self.streak >= CRASH_LOOP_AFTER

    def reset(self) -> None:
        self.streak = 0


def winsize(cols: int, rows: int) -> bytes:
    return struct.pack("HHHH", rows, cols, 0, 0)


# --- the PTY ---------------------------------------------------------------------------


class Pty:
    """One PTY id: the current master fd, its output history and its clients."""

    def __init__(self, loop: asyncio.AbstractEventLoop, pty_id: int, role: str,
                 command: Sequence[str], *, cols: int, rows: int,
                 scrollback: int = DEFAULT_CAPACITY,
                 max_backlog: int = DEFAULT_MAX_BACKLOG, silence_burst: int = SILENCE_BURST,
                 silence_after: float = SILENCE_AFTER, web_idle: float = WEB_IDLE,
                 on_change: Callable[[], None] | None = None) -> None:
        self.loop = loop
        self.id = pty_id
        self.role = role  # "agent" or "shell"
        self.command = list(command)
        self.on_change: Callable[[], None] = on_change or _nothing
        self._state = "starting"  # running, exited, restarting, crash-looping, dead
        self.fanout = FanOut(Scrollback(scrollback), max_backlog=max(max_backlog, scrollback),
                             idle_after=web_idle)
        self.clients: dict[int, StreamClient] = {}
        self.master: int | None = None
        self.pid: int | None = None  # inside the sandbox
        self.host_pid: int | None = None
        self.started = 0.0
        self.size = (cols, rows)
        self._input = bytearray()
        self.attention = Attention(burst=silence_burst, quiet=silence_after)
        self.attention_since = 0  # Unix seconds when the current mark was set
        self._silence: asyncio.TimerHandle | None = None
        self._expiry: asyncio.TimerHandle | None = None  # a web window going idle
        self._expiry_due = 0.0

    @property
    def state(self) -> str:
        return self._state

    @state.setter
    def state(self, value: str) -> None:
        if value != self._state:
            self._state = value
            self.on_change()

    def info(self) -> protocol.PtyEntry:
        """This PTY's part of the ``ls`` entry (SPEC 6)."""
        mark = self.attention.mark
        attention = None if mark is None else protocol.PtyAttention(
            reason=mark.reason, since=self.attention_since, text=mark.text)
        return protocol.PtyEntry(id=self.id, role=self.role, command=" ".join(self.command),
                                 state=self.state, attention=attention)

    # -- the process behind the id --------------------------------------------------------

    def attach_master(self, master: int, pid: int, host_pid: int | None) -> None:
        """A new process runs behind this id; start reading its output."""
        self.detach_master()
        os.set_blocking(master, False)
        self.master, self.pid, self.host_pid = master, pid, host_pid
        self.started = self.loop.time()
        self.state = "running"
        self._input.clear()
        self.attention.new_stream()
        self._apply_size(self.size)
        self.loop.add_reader(master, self._on_output)

    def detach_master(self) -> None:
        """Read what is left of the old process's output, then close its master (an
        ended process is not waiting for anyone: no silence mark for it)."""
        master = self.master
        if master is None:
            return
        self._drain()
        self._disarm_silence()
        self.loop.remove_reader(master)
        self.loop.remove_writer(master)
        os.close(master)
        self.master = None
        self._input.clear()

    def _drain(self) -> None:
        while self.master is not None and self._on_output():
            pass

    def _read(self) -> bytes:
        """One read of the master; b"" when nothing is there or every slave is closed."""
        assert self.master is not None
        try:
            data = os.read(self.master, READ_SIZE)
        except BlockingIOError:
            return b""
        except OSError as exc:  # EIO: every slave is closed
            if exc.errno != errno.EIO:
                logger.warning("pty %s: read failed: %s", self.id, exc)
            data = b""
        if not data:
            self.loop.remove_reader(self.master)
        return data

    def _on_output(self) -> bool:
        """Read what is there and hand it on in one piece; whether there was any.

        A read gives at most the line discipline's 4 KiB, so a burst is read a few times
        over before anything is published: one scrollback append, one attention scan and
        one frame per client for up to ``READS_PER_WAKE`` reads, instead of one of each per
        4 KiB. A keystroke's echo (one read, then nothing) goes on at once. Then the loop
        lets the clients drain.
        """
        chunks: list[bytes] = []
        while self.master is not None and len(chunks) < READS_PER_WAKE:
            data = self._read()
            if not data:
                break
            chunks.append(data)
        if not chunks:
            return False
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self.publish(data)
        mark = self.attention.output(data, self.loop.time())
        if mark is not None:
            self._announce(mark)
        elif self._silence is None:
            self._arm_silence()
        return True

    # -- output and events ---------------------------------------------------------------

    def publish(self, data: bytes) -> None:
        for delivery in self.fanout.publish(data):
            client = self.clients.get(delivery.client_id)  # type: ignore[call-overload]
            if client is not None and (delivery.queued or delivery.lost):
                client.kick()

    def publish_event(self, event: dict[str, Any]) -> None:
        self.fanout.publish_event(event)
        for client in list(self.clients.values()):
            client.kick()

    # -- attention ----------------------------------------------------------------------

    def _announce(self, mark: Signal) -> None:
        self.attention_since = int(time.time())
        logger.debug("pty %s wants the user: %s", self.id, mark.reason)
        self.publish_event(self._attention_event(mark))
        self.on_change()

    def _attention_event(self, mark: Signal | None) -> dict[str, Any]:
        if mark is None:
            return encode(protocol.Attention(pty=self.id, active=False))
        return encode(protocol.Attention(pty=self.id, active=True, reason=mark.reason,
                                         text=mark.text))

    def _arm_silence(self) -> None:
        due = self.attention.silence_due()
        if due is not None:
            self._silence = self.loop.call_at(due, self._silence_check)

    def _disarm_silence(self) -> None:
        if self._silence is not None:
            self._silence.cancel()
            self._silence = None

    def _silence_check(self) -> None:
        self._silence = None
        mark = self.attention.check_silence(self.loop.time())
        if mark is not None:
            self._announce(mark)
        else:
            self._arm_silence()  # output came meanwhile: due later, or not at all

    def _typed(self, data: bytes) -> None:
        if self.attention.typed(data):
            logger.debug("pty %s: a client typed, mark cleared", self.id)
            self.publish_event(self._attention_event(None))
            self.on_change()

    # -- input and window size ------------------------------------------------------------

    def write_input(self, data: bytes) -> None:
        if not data:
            return
        self._typed(data)
        if self.master is None:
            return
        if self._input:
            self._input += data
            return
        try:
            written = os.write(self.master, data)
        except BlockingIOError:
            written = 0
        except OSError as exc:
            logger.debug("pty %s: input dropped: %s", self.id, exc)
            return
        if written < len(data):
            self._input += data[written:]
            self.loop.add_writer(self.master, self._flush_input)

    def _flush_input(self) -> None:
        if self.master is None:
            return
        try:
            written = os.write(self.master, self._input)
        except BlockingIOError:
            return
        except OSError:
            written = len(self._input)
        del self._input[:written]
        if not self._input:
            self.loop.remove_writer(self.master)

    def resized(self, size: tuple[int, int] | None) -> None:
        """FanOut said the window changed: set it on the PTY, and watch for the next
        web client to go idle."""
        if size is not None and size != self.size:
            self.size = size
            self._apply_size(size)
        self._arm_expiry()

    def window_changed(self, client: StreamClient, control: protocol.Control) -> None:
        """A client's ``resize``, ``visibility``, ``active`` or ``sizing``."""
        fanout, now = self.fanout, self.loop.time()
        if isinstance(control, protocol.Resize):
            self.resized(fanout.resize(client.id, control.cols, control.rows, now=now))
        elif isinstance(control, protocol.Visibility):
            self.resized(fanout.set_visible(client.id, control.visible, now=now))
        elif isinstance(control, protocol.Sizing):
            self.resized(fanout.set_sizing(client.id, control.sizing, now=now))
        elif isinstance(control, protocol.Active):
            self.resized(fanout.touch(client.id, now=now))

    def client_typed(self, client: StreamClient, data: bytes) -> None:
        """Input from a client is activity, unless it is only its terminal's reports (an
        idle tab answering a cursor query is not the user)."""
        if client.id in self.fanout and not is_report(data):
            size = self.fanout.touch(client.id, now=self.loop.time())
            if size is not None:
                self.resized(size)
            elif self._expiry is None:
                self._arm_expiry()

    def _arm_expiry(self) -> None:
        """One timer for when the next counting web client goes idle: armed for the
        earliest due, left alone when activity only pushes that later (it then fires
        early, finds nothing changed and re-arms)."""
        due = self.fanout.next_expiry(self.loop.time())
        if due is None:
            return
        if self._expiry is not None:
            if self._expiry_due <= due:
                return
            self._expiry.cancel()
        self._expiry_due = due
        self._expiry = self.loop.call_at(due, self._expired)

    def _expired(self) -> None:
        self._expiry = None
        # asyncio may run a timer up to its clock resolution early: judge at the due
        now = max(self.loop.time(), self._expiry_due)
        size = self.fanout.size(now)
        if size is not None and size != self.size:
            logger.debug("pty %s: a web client went idle; window now %sx%s", self.id, *size)
        self.resized(size)

    def wiggle(self) -> None:
        """Nudge the program to redraw: one column less, then the real size."""
        cols, rows = self.size
        self._apply_size((cols - 1 if cols > 1 else cols + 1, rows))
        self._apply_size((cols, rows))

    def _apply_size(self, size: tuple[int, int]) -> None:
        if self.master is None:
            return
        try:
            fcntl.ioctl(self.master, termios.TIOCSWINSZ, winsize(*size))
        except OSError as exc:
            logger.debug("pty %s: cannot set the window size: %s", self.id, exc)

    # -- clients ---------------------------------------------------------------------------

    def add_client(self, client: StreamClient, cols: int, rows: int,
                   resume_from: int | None, session: str, *,
                   sizing: bool = True) -> protocol.AttachReply:
        """Attach ``client``; returns the attach response (``ValueError`` or
        ``ProtocolError`` for bad values). ``session`` names it for "detached from NAME";
        a client that is not ``sizing`` (read-only, "do not size for me") never sizes
        the PTY."""
        attached = self.fanout.add_client(client.id, cols, rows, resume_from=resume_from,
                                          sizing=sizing, read_only=client.read_only,
                                          local=client.kind == "local",
                                          now=self.loop.time())
        self.clients[client.id] = client
        self.on_change()
        if self.attention.mark is not None:
            self.fanout.send_event(client.id, self._attention_event(self.attention.mark))
        self.resized(attached.size)
        if attached.redraw:
            self.wiggle()
        return protocol.AttachReply(pty=self.id, offset=attached.start, cols=self.size[0],
                                    rows=self.size[1], session=session)

    def remove_client(self, client: StreamClient) -> None:
        if self.clients.pop(client.id, None) is not None:
            self.resized(self.fanout.remove_client(client.id, now=self.loop.time()))
            self.on_change()

    def close(self) -> None:
        for client in list(self.clients.values()):
            client.close()
        self.detach_master()
        self._disarm_silence()
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None


def _nothing() -> None:
    pass


class StreamClient:
    """A socket in stream mode on one PTY (tag 0x00 bytes, tag 0x01 JSON controls).

    ``read_only``: its input, resizes and other window controls are dropped.
    ``input_filter``: the filter its input to this PTY goes through (web and tunnel
    clients on the agent), or None.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket, kind: str,
                 on_close: Callable[[StreamClient], None], *, read_only: bool = False,
                 input_filter: InputFilter | None = None) -> None:
        self.loop = loop
        self.sock = sock
        self.kind = kind
        self.read_only = read_only
        self.input_filter = input_filter
        self._flush: asyncio.TimerHandle | None = None  # the filter's held bytes
        self._refused_at: float | None = None  # when a read-only refusal was last told
        # Handed over by the daemon (``adopt``): a daemon shutdown detaches it (SPEC 5).
        self.adopted = False
        self.id = next(_client_ids)
        self.pty: Pty | None = None
        self.closed = False
        self._decoder = StreamDecoder()
        self._out = bytearray()
        self._writing = False
        self._closing = False  # close once everything queued is sent
        self._on_close = on_close
        sock.setblocking(False)

    def start(self, pty: Pty, response: dict[str, Any]) -> None:
        """Send the attach response, then serve stream mode."""
        self.pty = pty
        self._out += encode_message(response)
        self.loop.add_reader(self.sock.fileno(), self._on_readable)
        self.kick()

    def kick(self) -> None:
        """Send what the socket takes now; the rest waits for it to be writable."""
        if self.closed or self.pty is None:
            return
        fanout = self.pty.fanout
        while True:
            if self._out:
                try:
                    sent = self.sock.send(self._out)
                except BlockingIOError:
                    sent = 0
                except OSError:
                    self.close()
                    return
                del self._out[:sent]
                if self._out:
                    if not self._writing:
                        self.loop.add_writer(self.sock.fileno(), self.kick)
                        self._writing = True
                    return
            if self.id not in fanout or not fanout.pending(self.id):
                break
            self._take_batch()
        if self._writing:
            self.loop.remove_writer(self.sock.fileno())
            self._writing = False
        if self._closing:
            self.close()

    def _take_batch(self) -> None:
        """Move one FanOut batch for this client into the outgoing buffer."""
        assert self.pty is not None
        batch = self.pty.fanout.take(self.id)
        for item in batch.items:
            if isinstance(item, bytes):
                self._out += encode_data(item)
            elif item.get("event") == "lagged":
                lagged = protocol.Lagged(pty=self.pty.id, bytes=int(item["bytes"]))
                self._out += encode_control(encode(lagged))
            else:
                self._out += encode_control(item)
        if batch.redraw:
            self.pty.wiggle()

    def send_and_close(self, event: dict[str, Any] | None) -> None:
        """Send what is queued for this client, then ``event`` (e.g. ``detached``) to it
        alone, then hang up; it leaves the PTY at once so later output is not its own."""
        if self.closed:
            return
        pty = self.pty
        if pty is not None and self.id in pty.fanout:
            while pty.fanout.pending(self.id):
                self._take_batch()
            pty.remove_client(self)
        if event is not None:
            self._out += encode_control(event)
        self._closing = True
        self.kick()

    def _on_readable(self) -> None:
        try:
            data = self.sock.recv(READ_SIZE)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.close()
            return
        if self._closing:  # it was told to go: its keys and sizes no longer count
            return
        for item in self._decoder.feed(data):
            if self.closed or self._closing or self.pty is None:
                return
            if isinstance(item, Data):
                self._input(item.data)
            elif isinstance(item, Control):
                self._control(item.message)
            else:
                logger.info("client %s: %s", self.id, item)
                self._out += encode_control(encode(protocol.StreamError(item.code,
                                                                        item.message)))
                self._closing = True
                self.kick()
                return

    def _input(self, data: bytes) -> None:
        """What the client typed: to the PTY, through its filter if it has one."""
        assert self.pty is not None
        if self.read_only:
            now = self.loop.time()
            if self._refused_at is None or now - self._refused_at >= REFUSED_EVERY:
                self._refused_at = now
                self._tell(encode(protocol.Blocked(self.pty.id, "input", "read-only", 1)))
            return
        self.pty.client_typed(self, data)
        if self.input_filter is None:
            self.pty.write_input(data)
            return
        self._filtered(self.input_filter.feed(data, self.loop.time()))

    def _filtered(self, out: Output) -> None:
        """Apply one filter result: bytes to the PTY, what was kept back to this client,
        and the timer for what it holds."""
        assert self.pty is not None and self.input_filter is not None
        self.pty.write_input(out.forward)
        for kept in out.blocked:
            self._tell(encode(protocol.Blocked(self.pty.id, kept.sequence, kept.reason,
                                               kept.count)))
        if out.blocked:
            self._tell(encode(protocol.Notice(self.pty.id, out.notice.decode())))
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        deadline = self.input_filter.deadline()
        if deadline is not None:
            self._flush = self.loop.call_at(deadline, self._flush_held)

    def _flush_held(self) -> None:
        self._flush = None
        if not self.closed and self.pty is not None and self.input_filter is not None:
            self._filtered(self.input_filter.flush_due(self.loop.time()))

    def _tell(self, event: dict[str, Any]) -> None:
        """An event for this client alone, after what is already queued for it."""
        assert self.pty is not None
        if self.id in self.pty.fanout:
            self.pty.fanout.send_event(self.id, event)
            self.kick()

    def _control(self, message: dict[str, Any]) -> None:
        assert self.pty is not None
        try:
            command = protocol.parse_control(message)
        except ProtocolError as exc:
            logger.info("client %s: %s", self.id, exc)
            return
        if isinstance(command, protocol.Detach):
            self.close()
            return
        if self.read_only:  # accepted; a viewer's window never counts
            return
        try:
            self.pty.window_changed(self, command)
        except (ValueError, ProtocolError) as exc:
            logger.info("client %s: %s", self.id, exc)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._flush is not None:  # what the filter held never reaches the PTY
            self._flush.cancel()
            self._flush = None
        fd = self.sock.fileno()
        if fd >= 0:
            self.loop.remove_reader(fd)
            if self._writing:
                self.loop.remove_writer(fd)
        if self.pty is not None:
            self.pty.remove_client(self)
        with contextlib.suppress(OSError):
            self.sock.close()
        self._on_close(self)
