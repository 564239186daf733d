"""The clients of one PTY, apart from any transport (SPEC 6 "many clients per PTY", 7.2).

``FanOut`` decides what each client is owed; the I/O layer only moves bytes:

- PTY output goes to ``publish(data)``: it is appended to the scrollback and queued for
  every client. A client whose queue would pass ``max_backlog`` bytes loses its queued
  output instead of slowing anyone: the bytes are counted, and the next ``take()`` for it
  starts with ``{"event": "lagged", "bytes": N}`` and sets ``Batch.redraw``, asking the
  caller to nudge the program to redraw (a resize wiggle). The nudge waits for that take on
  purpose: a client that never reads again never costs the others a redraw, and one that
  comes back gets a fresh screen right when it can receive it.
- The I/O layer calls ``take(client_id)`` whenever that client's transport can accept more
  (writable, not paused) and sends each item as a frame: ``bytes`` with tag 0x00, a
  ``dict`` as JSON with tag 0x01. What it has not taken is the client's backlog.
- ``size(now)`` is the PTY's window by the rule of ``session.sizing``: the smallest
  among local terminals and the web clients that are writable, sizing, visible and were
  active within ``idle_after`` seconds. The calls that change a window or what counts
  (attach, leave, resize, ``set_sizing``, ``set_visible``, ``touch`` for typing or an
  ``active`` message) take ``now`` (monotonic seconds) and return the new size when it
  changed, so the caller sets it on the PTY; ``next_expiry(now)`` is when time alone
  changes what counts, for the caller's timer.
- Offsets: a client's position is ``start`` from ``add_client`` plus every raw byte it was
  given plus every ``lagged`` byte count; ``Batch.offset`` is that number after the batch.
  A client that reconnects passes it back as ``resume_from`` and gets exactly the bytes it
  missed when the scrollback still holds them, otherwise a ``lagged`` event for the gap.
- Input needs no merging object: the caller writes each client's input to the PTY master
  as it arrives, in arrival order, from its single event loop (after the input filter of
  SPEC 7.3 for web and tunnel clients). Nothing here touches input.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

from coop_run.ipc.protocol import check_window
from coop_run.session.config import DEFAULT_MAX_BACKLOG, WEB_IDLE
from coop_run.session.scrollback import Scrollback
from coop_run.session.sizing import Window, counts, next_expiry, window_size

logger = logging.getLogger(__name__)

DEFAULT_TAKE = 256 * 1024  # well under the 1 MiB frame limit of SPEC 6
_ALIGN_WINDOW = 4096  # how far into a truncated replay to look for a line start

Item = bytes | dict[str, Any]
"""One frame for the client: raw terminal bytes (tag 0x00) or a JSON control event (0x01)."""


@dataclass(frozen=True)
class Delivery:
    """What one ``publish`` did for one client."""

    client_id: Hashable
    queued: int  # raw bytes now waiting for this client (0 after a drop)
    lost: int  # bytes this publish dropped for it; > 0 means it just lagged


@dataclass(frozen=True)
class Attached:
    """The result of ``add_client``."""

    start: int  # stream offset of the first byte queued for the client
    replayed: int  # bytes of scrollback queued for it (snapshot or resumed gap)
    size: tuple[int, int] | None  # the PTY's new (cols, rows) if it changed, else None
    redraw: bool  # the replay lacks the stream's beginning: nudge the program to redraw


@dataclass(frozen=True)
class Batch:
    """What ``take`` hands the I/O layer for one client."""

    items: tuple[Item, ...]
    offset: int  # the client's stream offset once it has received these items
    redraw: bool  # a lagged event is in items: nudge the program to redraw


@dataclass
class _Client:
    window: Window
    offset: int  # stream offset of the next raw byte the client will be handed
    queue: deque[Item] = field(default_factory=deque)
    queued: int = 0  # raw bytes in queue
    lost_pending: int = 0  # bytes dropped and not yet reported with a lagged event
    lost_total: int = 0
    lags: int = 0




def _line_start(start: int, data: bytes) -> tuple[int, bytes]:
    """Skip to just after the first newline near the front of a truncated replay.

    The ring's oldest byte can sit inside an escape sequence or a UTF-8 character; the
    first line start is the nearest point a terminal can safely begin from.
    """
    cut = data.find(b"\n", 0, _ALIGN_WINDOW)
    if cut < 0:
        return start, data
    return start + cut + 1, data[cut + 1 :]


class FanOut:
    """One PTY's attached clients: per-client queues, lag accounting, window size."""

    def __init__(
        self, scrollback: Scrollback | None = None, *, max_backlog: int = DEFAULT_MAX_BACKLOG,
        idle_after: float = WEB_IDLE,
    ) -> None:
        """``scrollback`` is the PTY's output history (a new default-sized one if omitted).

        ``max_backlog`` must hold a full scrollback replay, which is queued at attach.
        ``idle_after``: seconds a web client's window counts after its last activity.
        """
        self.scrollback = Scrollback() if scrollback is None else scrollback
        if isinstance(max_backlog, bool) or not isinstance(max_backlog, int):
            raise TypeError(f"max_backlog must be an integer, not {max_backlog!r}")
        if max_backlog < self.scrollback.capacity:
            raise ValueError(
                f"max_backlog ({max_backlog}) must be at least the scrollback capacity "
                f"({self.scrollback.capacity})"
            )
        self.max_backlog = max_backlog
        self.idle_after = idle_after
        self._clients: dict[Hashable, _Client] = {}

    # -- clients and window size --------------------------------------------------------

    def __contains__(self, client_id: object) -> bool:
        return client_id in self._clients

    def __len__(self) -> int:
        return len(self._clients)

    @property
    def clients(self) -> tuple[Hashable, ...]:
        """Attached client ids in attach order."""
        return tuple(self._clients)

    @property
    def offset(self) -> int:
        """The stream's end offset: every byte ever published (same as ``scrollback.end``)."""
        return self.scrollback.end

    def size(self, now: float = 0.0) -> tuple[int, int] | None:
        """The PTY's ``(cols, rows)`` at ``now`` (``session.sizing.window_size``), or
        ``None`` when no window may size it: the PTY keeps what it has."""
        return window_size((c.window for c in self._clients.values()), now, self.idle_after)

    def next_expiry(self, now: float) -> float | None:
        """When the next web client that counts goes idle (recompute the size then)."""
        return next_expiry((c.window for c in self._clients.values()), now, self.idle_after)

    def add_client(
        self, client_id: Hashable, cols: int, rows: int, *, resume_from: int | None = None,
        sizing: bool = True, read_only: bool = False, local: bool = True, now: float = 0.0,
    ) -> Attached:
        """Attach a client and queue what it must see first.

        A new client (``resume_from=None``) gets the scrollback snapshot, from its first
        line start when older output is already gone (then ``Attached.redraw`` asks the
        caller to nudge the program, since the screen cannot be rebuilt from what is
        left). A reconnecting one gets the bytes from ``resume_from`` on; if they are
        gone it gets a ``lagged`` event for the gap instead, and its first ``take`` asks
        for a redraw. Raises ``ProtocolError`` for a bad window size
        (``ipc.protocol.check_window``), ``ValueError`` for a duplicate id or an offset past
        the end, ``TypeError`` for a non-integer offset. A client that is not ``sizing``
        ("do not size for me") or is ``read_only`` gets output like the others, and its
        window does not size the PTY; one that is not ``local`` (web, tunnel) sizes it
        only while visible and active (joining at ``now`` is activity).
        """
        if client_id in self._clients:
            raise ValueError(f"client {client_id!r} is already attached")
        check_window(cols, rows)
        before = self.size(now)
        redraw = False
        if resume_from is None:
            start, data = self.scrollback.snapshot()
            if start > 0:
                start, data = _line_start(start, data)
                redraw = True
            lost = 0
        else:
            held = self.scrollback.read_from(resume_from)  # ValueError past the end
            start = resume_from
            if held is None:
                data = b""
                lost = self.scrollback.end - resume_from
            else:
                data, lost = held, 0
        window = Window(cols, rows, local=local, sizing=sizing, writable=not read_only,
                        active_at=now)
        client = _Client(window=window, offset=start)
        if lost:
            client.lost_pending = client.lost_total = lost
            client.lags = 1
        if data:
            client.queue.append(data)
            client.queued = len(data)
        self._clients[client_id] = client
        after = self.size(now)
        logger.debug(
            "client %r attached at offset %d (%d bytes replayed)", client_id, start, len(data)
        )
        return Attached(
            start=start,
            replayed=len(data),
            size=after if after != before else None,
            redraw=redraw,
        )

    def remove_client(self, client_id: Hashable, *,
                      now: float = 0.0) -> tuple[int, int] | None:
        """Detach a client, forgetting its queue; returns the new size if it changed.

        Returns ``None`` when the last client leaves: the PTY keeps its size.
        """
        before = self.size(now)
        self._client(client_id)
        del self._clients[client_id]
        after = self.size(now)
        return after if after != before else None

    def resize(self, client_id: Hashable, cols: int, rows: int, *,
               now: float = 0.0) -> tuple[int, int] | None:
        """A client's window changed (activity at ``now``); the PTY's new size if that
        changed."""
        check_window(cols, rows)
        window = self._client(client_id).window
        before = self.size(now)
        window.cols, window.rows, window.active_at = cols, rows, now
        return self._changed(before, now)

    def set_sizing(self, client_id: Hashable, sizing: bool, *,
                   now: float = 0.0) -> tuple[int, int] | None:
        """Whether a client's window may size the PTY from now on ("do not size for me"
        switched off or on; the switch is activity); the new size if it changed. A
        read-only client's never does."""
        window = self._client(client_id).window
        before = self.size(now)
        window.sizing, window.active_at = sizing, now
        return self._changed(before, now)

    def set_visible(self, client_id: Hashable, visible: bool, *,
                    now: float = 0.0) -> tuple[int, int] | None:
        """A web client's view was hidden or shown (being shown is activity); the new
        size if it changed."""
        window = self._client(client_id).window
        before = self.size(now)
        window.visible = visible
        if visible:
            window.active_at = now
        return self._changed(before, now)

    def touch(self, client_id: Hashable, *, now: float) -> tuple[int, int] | None:
        """Activity at a client (it typed, or said ``active``); the new size if that
        made its window count again. Cheap when it already counts (every keystroke)."""
        window = self._client(client_id).window
        if counts(window, now, self.idle_after):
            window.active_at = now
            return None
        before = self.size(now)
        window.active_at = now
        return self._changed(before, now)

    def _changed(self, before: tuple[int, int] | None,
                 now: float) -> tuple[int, int] | None:
        after = self.size(now)
        return after if after != before else None

    # -- output ---------------------------------------------------------------------------

    def publish(self, data: bytes) -> list[Delivery]:
        """PTY output: append it to the scrollback and queue it for every client.

        Returns one ``Delivery`` per attached client, in attach order; the caller wakes the
        writer of each client with ``queued > 0``.
        """
        if not isinstance(data, bytes):
            data = bytes(data)  # queued by reference: it must not change under us
        self.scrollback.append(data)
        size = len(data)
        deliveries: list[Delivery] = []
        if size == 0:
            return [Delivery(cid, c.queued, 0) for cid, c in self._clients.items()]
        for cid, client in self._clients.items():
            if client.queued + size > self.max_backlog:
                lost = self._drop(client) + size
                client.lost_pending += size
                client.lost_total += size
                deliveries.append(Delivery(cid, 0, lost))
                logger.debug("client %r lagged: %d bytes dropped", cid, lost)
                continue
            client.queue.append(data)
            client.queued += size
            deliveries.append(Delivery(cid, client.queued, 0))
        return deliveries

    def publish_event(self, event: dict[str, Any]) -> None:
        """Queue a control event (``pty_exited``, ``pty_restarting``, ``detached``) for all.

        Events keep their place among the bytes and survive a backlog drop; they are not
        part of the byte stream, so they take no offset and are not in the scrollback.
        """
        for client in self._clients.values():
            client.queue.append(dict(event))

    def send_event(self, client_id: Hashable, event: dict[str, Any]) -> None:
        """Queue a control event for one client (the state it attached into)."""
        self._client(client_id).queue.append(dict(event))

    def _drop(self, client: _Client) -> int:
        """Forget a client's queued bytes (keeping its events); returns how many."""
        dropped = client.queued
        if dropped:
            client.queue = deque(item for item in client.queue if isinstance(item, dict))
            client.queued = 0
        if client.lost_pending == 0:
            client.lags += 1  # a new episode; drops before the client reads again are one
        client.lost_pending += dropped
        client.lost_total += dropped
        return dropped

    def take(self, client_id: Hashable, max_bytes: int = DEFAULT_TAKE) -> Batch:
        """Hand over what a client is owed, at most ``max_bytes`` raw bytes of it.

        A pending ``lagged`` event comes first; adjacent chunks are joined into one item.
        Call again while ``pending(client_id)`` is true.
        """
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be positive, not {max_bytes}")
        client = self._client(client_id)
        items: list[Item] = []
        redraw = False
        if client.lost_pending:
            items.append({"event": "lagged", "bytes": client.lost_pending})
            client.offset += client.lost_pending
            client.lost_pending = 0
            redraw = True
        budget = max_bytes
        chunks: list[bytes] = []
        queue = client.queue
        while queue and budget > 0:
            item = queue[0]
            if isinstance(item, dict):
                if chunks:
                    items.append(b"".join(chunks))
                    chunks = []
                items.append(queue.popleft())
                continue
            if len(item) <= budget:
                chunks.append(item)
                queue.popleft()
                budget -= len(item)
            else:
                chunks.append(item[:budget])
                queue[0] = item[budget:]
                budget = 0
        if chunks:
            items.append(b"".join(chunks))
        # Events right behind the last bytes cost nothing: send them in the same batch.
        while queue and isinstance(queue[0], dict):
            items.append(queue.popleft())
        given = max_bytes - budget
        client.queued -= given
        client.offset += given
        return Batch(items=tuple(items), offset=client.offset, redraw=redraw)

    # -- per-client figures ---------------------------------------------------------------

    def pending(self, client_id: Hashable) -> bool:
        """Whether ``take`` would return anything for this client."""
        client = self._client(client_id)
        return bool(client.queue) or client.lost_pending > 0

    def backlog(self, client_id: Hashable) -> int:
        """Raw bytes queued for this client and not yet taken."""
        return self._client(client_id).queued

    def client_offset(self, client_id: Hashable) -> int:
        """The client's stream offset after everything taken so far (its resume point)."""
        return self._client(client_id).offset

    def lost(self, client_id: Hashable) -> int:
        """Bytes this client has lost to lagging since it attached (reported or not)."""
        return self._client(client_id).lost_total

    def lags(self, client_id: Hashable) -> int:
        """How many times this client lagged (consecutive drops before a take count once)."""
        return self._client(client_id).lags

    def _client(self, client_id: Hashable) -> _Client:
        try:
            return self._clients[client_id]
        except KeyError:
            raise KeyError(f"no client {client_id!r} on this PTY") from None
