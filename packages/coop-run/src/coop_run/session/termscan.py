"""What in a PTY's output asks for the user (pure, streaming): a bell outside escape
sequences, and an OSC 9 or OSC 777 desktop notification.

``OutputScanner.feed(chunk)`` sees every chunk of a PTY's output once, keeps its state
across chunks (a sequence may be cut anywhere), and returns a ``Signal`` for the chunk or
``None``. The supervisor runs it on the path every output byte takes to the clients, so it
is built on ``bytes.find``/``rfind`` of single bytes (memchr: C speed, about 1 us per
64 KiB) and does Python work only per bell, per OSC and per string sequence, never per
byte or per CSI sequence. That is enough for a terminal's own parser (the DEC state
machine xterm follows) because:

- a C0 control inside a CSI or a plain ESC sequence is executed, so a BEL there rings:
  only the string sequences (OSC ``ESC ]``; DCS, SOS, PM, APC: ``ESC P X ^ _``) hide one;
- every ESC ends a string (``ESC \\`` is its ST; any other ESC aborts it and begins a new
  sequence), so the last ESC before a BEL says whether that BEL is inside a string;
- BEL ends an OSC (xterm's terminator, as common as ST), while in DCS/SOS/PM/APC it is
  ignored; CAN and SUB abort any string.

Simplifications, the same whichever way the stream is cut: ``ESC BEL`` rings and ends the
ESC (a terminal would ring and keep waiting for the ESC's next byte); an OSC ended by an
ESC that is not ST is dropped, not dispatched; 8-bit C1 controls (0x9b, 0x9d, 0x9c) are
not interpreted, since in UTF-8 output those bytes are parts of characters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

BELL: Final = "bell"
NOTIFICATION: Final = "notification"

MAX_TEXT: Final = 256  # characters of a notification kept for the event
_KEEP: Final = 4 * MAX_TEXT + 16  # bytes of an OSC's payload kept (the rest is never read)

_ESC, _BEL = 0x1B, 0x07  # (CAN 0x18 and SUB 0x1a: ``_abort_at``)
_BACKSLASH, _OSC_INTRO = 0x5C, 0x5D  # "\" (ST = ESC \), "]" (OSC = ESC ])
_STRING_INTROS: Final = frozenset(b"PX^_")  # DCS, SOS, PM, APC
_NOTIFICATION_OPENINGS: Final = (b"9;", b"777;notify;")

# Scanner states between chunks.
_GROUND, _ESCAPE, _OSC, _OSC_ESCAPE, _STRING = range(5)

# ConEmu's OSC 9 sub-commands (9;1 sleep ... 9;4 progress ... 9;12 prompt) are not
# notifications; Windows Terminal and others send 9;4 progress and 9;9 cwd.
_CONEMU: Final = frozenset(str(n).encode() for n in range(1, 13))
_CONTROLS: Final = dict.fromkeys([*range(0x20), *range(0x7F, 0xA0)], " ")


@dataclass(frozen=True, slots=True)
class Signal:
    """What asks for the user: a ``bell`` or a ``notification`` with its text (``None``
    when it carried none) found here, or ``silence`` (``session.attention``)."""

    reason: str
    text: str | None = None


class OutputScanner:
    """One PTY's output stream: where its bells and notifications are."""

    __slots__ = ("_payload", "_state")

    def __init__(self) -> None:
        self._state = _GROUND
        self._payload = bytearray()  # the open OSC's first _KEEP bytes

    def feed(self, data: bytes) -> Signal | None:
        """Scan the next chunk; the chunk's notification (its last) if it has one, else a
        bell if it rang, else ``None``."""
        n = len(data)
        state = self._state
        i = 0
        bell = False
        note: Signal | None = None
        bel = -2  # next BEL at or after i: -1 none left in data, -2 not looked for
        while i < n:
            if state == _GROUND:
                if bell:  # one bell per chunk is enough: only OSCs and the state matter now
                    end = n
                else:
                    if bel != -1 and bel < i:
                        bel = data.find(b"\x07", i)
                    end = n if bel < 0 else bel
                osc = _find_notification(data, i, end)
                if osc < 0:  # other OSCs matter only if one holds ``end`` or the cut
                    osc = data.rfind(b"\x1b", i, end)
                    if osc >= 0:
                        if osc + 1 == n:
                            state, i = _ESCAPE, n
                            continue
                        if data[osc + 1] in _STRING_INTROS:
                            state, i = _STRING, osc + 2  # a BEL at ``end`` may be inside
                            continue
                        if data[osc + 1] != _OSC_INTRO:
                            osc = -1
                if osc >= 0:
                    state, i = _OSC, osc + 2
                    self._payload.clear()
                    continue
                if end == n:
                    break
                bell = True  # ``ESC BEL`` too
                i = end + 1
            elif state == _OSC:
                esc = data.find(b"\x1b", i)
                stop = n if esc < 0 else esc
                bel_at = data.find(b"\x07", i, stop)
                if bel_at >= 0:
                    stop = bel_at
                abort = _abort_at(data, i, stop)
                if abort >= 0:
                    state, i = _GROUND, abort + 1
                    continue
                room = _KEEP - len(self._payload)
                if room > 0:
                    self._payload += data[i : min(stop, i + room)]
                if bel_at >= 0:
                    note = _notification(self._payload) or note
                    state, i = _GROUND, bel_at + 1
                elif esc >= 0:
                    state, i = _OSC_ESCAPE, esc + 1
                else:
                    i = n
            elif state == _STRING:
                esc = data.find(b"\x1b", i)
                stop = n if esc < 0 else esc
                abort = _abort_at(data, i, stop)
                if abort >= 0:
                    state, i = _GROUND, abort + 1
                elif esc >= 0:
                    state, i = _GROUND, esc  # the ESC ends it; ground reads it
                else:
                    i = n
            elif state == _OSC_ESCAPE:
                if data[i] == _BACKSLASH:  # ST
                    note = _notification(self._payload) or note
                    state, i = _GROUND, i + 1
                else:  # the OSC is dropped; its ESC begins a new sequence
                    state = _ESCAPE
            else:  # _ESCAPE: data[i] follows an ESC (the previous chunk ended with it)
                byte = data[i]
                if byte == _OSC_INTRO:
                    state, i = _OSC, i + 1
                    self._payload.clear()
                elif byte in _STRING_INTROS:
                    state, i = _STRING, i + 1
                elif byte == _BEL:
                    bell = True
                    state, i = _GROUND, i + 1
                else:
                    state = _GROUND  # an ESC sequence, ST, or a new ESC: ground reads it
        self._state = state
        if note is not None:
            return note
        return Signal(BELL) if bell else None


def _find_notification(data: bytes, start: int, end: int) -> int:
    """Where the first OSC that opens as a notification (``ESC ] 9 ;`` or
    ``ESC ] 777 ; notify ;``) in ``data[start:end]`` begins, or -1.

    Output without a ``]`` costs one memchr. A multi-byte ``find`` costs ten to thirty
    times as much, so it comes only after a ``]``, and the searches for the two openings
    only after an OSC that is not one: output full of other OSCs (hyperlinks, titles)
    is skipped at C speed instead of one OSC at a time.
    """
    close = data.find(b"]", start + 1, end)
    if close < 0:
        return -1
    osc = close - 1 if data[close - 1] == _ESC else data.find(b"\x1b]", close, end)
    if osc < 0 or data.startswith(_NOTIFICATION_OPENINGS, osc + 2):
        return osc  # (a BEL never matches an opening: a match ends before ``end``)
    nine = data.find(b"\x1b]9;", osc, end)
    notify = data.find(b"\x1b]777;notify;", osc, end)
    if nine < 0 or 0 <= notify < nine:
        return notify
    return nine


def _abort_at(data: bytes, start: int, end: int) -> int:
    """The first CAN or SUB in ``data[start:end]`` (they abort a sequence), or -1."""
    can = data.find(b"\x18", start, end)
    sub = data.find(b"\x1a", start, end)
    if can < 0:
        return sub
    return can if sub < 0 else min(can, sub)


def _notification(payload: bytes | bytearray) -> Signal | None:
    """The notification an OSC's payload carries: ``9;text`` (iTerm2; not ConEmu's
    ``9;N;...`` commands) or ``777;notify;title;body`` (rxvt, VTE, foot, ghostty)."""
    if payload.startswith(b"9;"):
        body = bytes(payload[2:])
        if body.partition(b";")[0] in _CONEMU:
            return None
        return Signal(NOTIFICATION, _text(body))
    if payload.startswith(b"777;notify;"):
        title, _sep, body = bytes(payload[11:]).partition(b";")
        parts = [part for part in (_text(title), _text(body)) if part]
        return Signal(NOTIFICATION, ": ".join(parts) if parts else None)
    return None


def _text(raw: bytes) -> str | None:
    """Notification text for a client to show: UTF-8, no control characters, at most
    ``MAX_TEXT`` characters (cut with an ellipsis); ``None`` when nothing is left."""
    text = " ".join(raw.decode("utf-8", "replace").translate(_CONTROLS).split())
    if len(text) > MAX_TEXT:
        text = text[: MAX_TEXT - 1] + "\u2026"
    return text or None
