"""A PTY's recent output as a ring buffer addressed by absolute byte offsets (SPEC 6, 7.2).

Offset 0 is the first byte the PTY ever produced; the ring holds the bytes from ``start``
to ``end``. A new client is sent ``snapshot()``; a client that reconnects names the offset
it had reached and gets exactly what it missed from ``read_from()``, or ``None`` when that
has already been overwritten (the caller then asks the program to redraw instead).

Byte ``x`` always lives at index ``x % capacity`` of one bytearray, so an append is one or
two slice copies of the new data only: nothing already held is ever moved. The array grows
with the output up to ``capacity``, so an idle PTY that printed little costs little.
"""

from __future__ import annotations

import logging

from coop_run.session.config import DEFAULT_CAPACITY

logger = logging.getLogger(__name__)



class Scrollback:
    """The last ``capacity`` bytes of one output stream, with absolute offsets."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY, *, offset: int = 0) -> None:
        """``offset`` is the absolute offset of the first byte to be appended.

        It is 0 for the PTY's own buffer; a mirror that joins a stream midway (a daemon
        reconnecting to a supervisor) starts at the offset it joined at.
        """
        for name, value in (("capacity", capacity), ("offset", offset)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"scrollback {name} must be an integer, not {value!r}")
        if capacity < 1:
            raise ValueError(f"scrollback capacity must be positive, not {capacity}")
        if offset < 0:
            raise ValueError(f"scrollback offset {offset} is negative")
        self._capacity = capacity
        self._buf = bytearray()
        self._first = offset  # offset of the first byte ever appended here
        self._end = offset

    @property
    def capacity(self) -> int:
        """Most bytes held at once."""
        return self._capacity

    @property
    def start(self) -> int:
        """Offset of the oldest byte still held."""
        return max(self._first, self._end - self._capacity)

    @property
    def end(self) -> int:
        """Offset just past the newest byte: the total length of the stream so far."""
        return self._end

    def __len__(self) -> int:
        return self._end - self.start

    def append(self, data: bytes | bytearray | memoryview) -> int:
        """Add output at the end, forgetting the oldest bytes past capacity; returns ``end``."""
        view = memoryview(data).cast("B")
        size = len(view)
        if size == 0:
            return self._end
        cap = self._capacity
        if size >= cap:
            # Only the last `cap` bytes survive: lay them out so byte x sits at x % cap.
            tail = view[size - cap :]
            pos = (self._end + size - cap) % cap
            self._buf = bytearray(cap)
            self._buf[pos:] = tail[: cap - pos]
            self._buf[:pos] = tail[cap - pos :]
        elif len(self._buf) < cap:
            self._grow(view)
        else:
            pos = self._end % cap
            first = min(size, cap - pos)
            self._buf[pos : pos + first] = view[:first]
            if first < size:
                self._buf[: size - first] = view[first:]
        self._end += size
        return self._end

    def _grow(self, view: memoryview) -> None:
        """Append while the array is still shorter than capacity (so index == offset % cap)."""
        cap = self._capacity
        held = len(self._buf)
        pos = self._end % cap
        if pos != held:
            # A stream that started at a non-zero offset: re-lay the few bytes held so far.
            old = bytes(self._buf)
            self._buf = bytearray(cap)
            start = self._end - held
            self._place(start, old)
            self._place(self._end, view)
            return
        room = cap - held
        self._buf += view[:room]
        if len(view) > room:
            self._buf[: len(view) - room] = view[room:]

    def _place(self, offset: int, data: bytes | memoryview) -> None:
        """Write ``data`` (at most capacity bytes) at its ring position in a full-size array."""
        cap = self._capacity
        pos = offset % cap
        first = min(len(data), cap - pos)
        self._buf[pos : pos + first] = data[:first]
        if first < len(data):
            self._buf[: len(data) - first] = data[first:]

    def read_from(self, offset: int) -> bytes | None:
        """The bytes from ``offset`` to ``end``, or ``None`` if some have been overwritten.

        Raises ``ValueError`` for an offset beyond ``end`` or a negative one (this stream
        never produced it) and ``TypeError`` for a non-integer.
        """
        if isinstance(offset, bool) or not isinstance(offset, int):
            raise TypeError(f"scrollback offset must be an integer, not {offset!r}")
        if offset < 0:
            raise ValueError(f"scrollback offset {offset} is negative")
        if offset > self._end:
            raise ValueError(
                f"scrollback offset {offset} is beyond the end of output ({self._end})"
            )
        if offset < self.start:
            return None
        return self._copy(offset)

    def _copy(self, offset: int) -> bytes:
        """The held bytes from ``offset`` (already checked to be held) to ``end``."""
        length = self._end - offset
        if length == 0:
            return b""
        cap = self._capacity
        pos = offset % cap
        if len(self._buf) < cap:
            return bytes(self._buf[pos : pos + length])
        first = min(length, cap - pos)
        if first == length:
            return bytes(self._buf[pos : pos + length])
        return bytes(self._buf[pos:]) + bytes(self._buf[: length - first])

    def snapshot(self) -> tuple[int, bytes]:
        """``(start, bytes held)``: what a newly attached client is sent first."""
        start = self.start
        return start, self._copy(start)
