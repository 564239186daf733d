"""The output scanner (``session.termscan``), pure: bells outside escape sequences, OSC 9
and OSC 777 notifications, its state kept across chunks cut anywhere.

``reference`` is the obvious byte-at-a-time state machine the scanner must agree with;
every golden stream is checked whole, cut at every boundary, cut at every pair of
boundaries and fed one byte at a time, and seeded random streams over the bytes that
matter are checked against the reference the same ways.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from itertools import pairwise

import pytest

from coop_run.session.termscan import BELL, MAX_TEXT, NOTIFICATION, OutputScanner, Signal

ESC, BEL, ST = b"\x1b", b"\x07", b"\x1b\\"


def osc(payload: bytes, end: bytes = BEL) -> bytes:
    return ESC + b"]" + payload + end


def notify(text: str) -> Signal:
    return Signal(NOTIFICATION, text)


# --- the reference: one byte at a time --------------------------------------------------


def _reference_note(payload: bytes) -> Signal | None:
    """The notification rule written plainly (the scanner keeps only a prefix)."""
    if payload.startswith(b"9;"):
        head = payload[2:].split(b";")[0]
        if head.isdigit() and str(int(head)).encode() == head and 1 <= int(head) <= 12:
            return None
        return Signal(NOTIFICATION, _plain(payload[2:]))
    if payload.startswith(b"777;notify;"):
        title, _, body = payload[11:].partition(b";")
        parts = [p for p in (_plain(title), _plain(body)) if p]
        return Signal(NOTIFICATION, ": ".join(parts) if parts else None)
    return None


def _plain(raw: bytes) -> str | None:
    text = "".join(" " if ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 else c
                   for c in raw.decode("utf-8", "replace"))
    text = " ".join(text.split())
    if len(text) > MAX_TEXT:
        text = text[: MAX_TEXT - 1] + "\u2026"
    return text or None


def reference(stream: bytes) -> list[tuple[int, Signal]]:
    """(index of the byte that caused it, signal) for every bell and notification."""
    found: list[tuple[int, Signal]] = []
    state, payload = "ground", b""
    for index, byte in enumerate(stream):
        char = bytes([byte])
        if state == "osc_escape":
            if char == b"\\":
                note = _reference_note(payload[: 4 * MAX_TEXT + 16])
                if note is not None:
                    found.append((index, note))
                state = "ground"
                continue
            state = "escape"  # the OSC is dropped; this byte follows the ESC
        if state == "ground":
            if char == ESC:
                state = "escape"
            elif char == BEL:
                found.append((index, Signal(BELL)))
        elif state == "escape":
            if char == b"]":
                state, payload = "osc", b""
            elif char in (b"P", b"X", b"^", b"_"):
                state = "string"
            elif char == BEL:
                found.append((index, Signal(BELL)))
                state = "ground"
            elif char != ESC:
                state = "ground"
        elif state == "osc":
            if char == BEL:
                note = _reference_note(payload[: 4 * MAX_TEXT + 16])
                if note is not None:
                    found.append((index, note))
                state = "ground"
            elif char == ESC:
                state = "osc_escape"
            elif char in (b"\x18", b"\x1a"):
                state = "ground"
            else:
                payload += char
        elif state == "string":
            if char == ESC:
                state = "escape"
            elif char in (b"\x18", b"\x1a"):
                state = "ground"
    return found


def expected(signals: list[tuple[int, Signal]], size: int,
             cuts: list[int]) -> list[Signal | None]:
    """What ``feed`` returns per chunk: the chunk's last notification, else a bell."""
    bounds = [0, *cuts, size]
    out: list[Signal | None] = []
    for start, end in pairwise(bounds):
        inside = [s for i, s in signals if start <= i < end]
        notes = [s for s in inside if s.reason == NOTIFICATION]
        out.append(notes[-1] if notes else (Signal(BELL) if inside else None))
    return out


def scanned(stream: bytes, cuts: list[int]) -> list[Signal | None]:
    scanner = OutputScanner()
    bounds = [0, *cuts, len(stream)]
    return [scanner.feed(stream[a:b]) for a, b in pairwise(bounds)]


def cuttings(stream: bytes, pairs: bool = True) -> Iterator[list[int]]:
    """Whole, every single cut, every pair of cuts (short streams), one byte at a time."""
    n = len(stream)
    yield []
    for i in range(n + 1):
        yield [i]
    if pairs and n <= 60:
        for i in range(n + 1):
            for j in range(i, n + 1):
                yield [i, j]
    yield list(range(1, n))


def check(stream: bytes, pairs: bool = True) -> None:
    signals = reference(stream)
    for cuts in cuttings(stream, pairs):
        assert scanned(stream, cuts) == expected(signals, len(stream), cuts), (stream, cuts)


# --- golden streams -----------------------------------------------------------------------

GOLDEN: list[tuple[bytes, list[Signal]]] = [
    (b"plain text\r\n", []),
    (b"done" + BEL, [Signal(BELL)]),
    (b"\x1b[1;31mred\x1b[0m" + BEL + b"\x1b[K", [Signal(BELL)]),
    (b"\x1b[1" + BEL + b"m", [Signal(BELL)]),  # a C0 inside CSI is executed: it rings
    (osc(b"0;my title") + b"after", []),  # BEL ends an OSC: not a bell
    (osc(b"2;title", ST) + BEL, [Signal(BELL)]),
    (osc(b"9;Build finished"), [notify("Build finished")]),
    (osc(b"9;Build finished", ST), [notify("Build finished")]),
    (osc(b"9;4;1;50") + osc(b"9;4;0;", ST), []),  # ConEmu progress
    (osc(b"9;9;/home/me") + osc(b"9;12"), []),  # ConEmu cwd, prompt mark
    (osc(b"9;13 tests passed"), [notify("13 tests passed")]),
    (osc(b"9;4 files changed"), [notify("4 files changed")]),
    (osc(b"777;notify;Claude;Waiting for input"), [notify("Claude: Waiting for input")]),
    (osc(b"777;notify;;body only", ST), [notify("body only")]),
    (osc(b"777;notify;Title;a;b;c"), [notify("Title: a;b;c")]),
    (osc(b"777;preexec") + osc(b"7;file:///tmp"), []),
    (osc(b"9;"), [Signal(NOTIFICATION, None)]),
    (osc(b"9;multi\r\nline\ttext\x1b", b"\\"), [notify("multi line text")]),
    (osc("9;caf\u00e9 \u2713".encode()), [notify("caf\u00e9 \u2713")]),
    (ESC + b"P1$r0m" + BEL + b"more" + ST + b"x", []),  # BEL inside DCS is ignored
    (ESC + b"_Gi=1;AAAA" + BEL + ST, []),  # APC (kitty graphics)
    (ESC + b"Pdata\x18" + BEL, [Signal(BELL)]),  # CAN aborts the DCS
    (osc(b"9;cancelled\x1a") + b"", [Signal(BELL)]),  # SUB aborts the OSC; BEL rings
    (osc(b"9;not ST", ESC + b"[0m") + BEL, [Signal(BELL)]),  # ESC not ST drops the OSC
    (ESC + BEL, [Signal(BELL)]),
    (ESC + ESC + b"]9;twice" + BEL, [notify("twice")]),
    (b"\x1b(]" + BEL, [Signal(BELL)]),  # ESC ( ] designates a charset: no OSC
    (b"a]b" + BEL + b"[x]" + osc(b"9;late"), [Signal(BELL), notify("late")]),
    (ST + BEL, [Signal(BELL)]),  # a stray ST is nothing
    (ESC + b"Pa" + ESC + b"Pb" + BEL + ST, []),  # an ESC ends a DCS, the next one opens
    (ESC + b"Pa" + ESC + b"]9;from DCS" + BEL, [notify("from DCS")]),
    (ESC + b"Pa" + ESC + b"[1m" + BEL, [Signal(BELL)]),
    (osc(b"9;dropped", ESC + b"]9;kept" + BEL), [notify("kept")]),
    (osc(b"9;dropped", ESC + b"Pdcs" + BEL + ST), []),
    # other OSCs first: hyperlinks, titles, then the notification
    (osc(b"8;;http://x", ST) + b"link" + osc(b"8;;", ST) + osc(b"9;after links"),
     [notify("after links")]),
    (osc(b"0;title") + b"[" + osc(b"777;notify;T;B", ST) + osc(b"9;4;1;9"), [notify("T: B")]),
    (osc(b"777;") + osc(b"777;notify") + osc(b"99;x") + osc(b"19;x"), []),
    (osc(b"8;;u", ST) + osc(b"9;mid", ST) + b"\x1b[0m tail", [notify("mid")]),
    (osc(b"0;t", ST) + osc(b"777;notify;T;B", ST) + osc(b"9;2nd", ST) + b"\x1b[m",
     [notify("T: B"), notify("2nd")]),
]


@pytest.mark.parametrize(("stream", "signals"), GOLDEN, ids=lambda v: repr(v)[:40])
def test_golden_streams_at_every_cut(stream: bytes, signals: list[Signal]) -> None:
    assert [s for _, s in reference(stream)] == signals
    check(stream)


def test_a_chunk_reports_its_last_notification_over_its_bells() -> None:
    scanner = OutputScanner()
    stream = BEL + osc(b"9;one") + BEL + osc(b"777;notify;two;2") + BEL
    assert scanner.feed(stream) == notify("two: 2")
    assert scanner.feed(BEL + BEL) == Signal(BELL)
    assert scanner.feed(b"") is None
    assert scanner.feed(b"quiet") is None


def test_state_carries_across_chunks() -> None:
    scanner = OutputScanner()
    assert scanner.feed(b"\x1b]9;half") is None
    assert scanner.feed(b" and half\x1b") is None
    assert scanner.feed(b"\\") == notify("half and half")
    assert scanner.feed(ESC + b"P") is None
    assert scanner.feed(BEL * 3) is None  # still inside the DCS
    assert scanner.feed(ST + BEL) == Signal(BELL)


def test_text_is_bounded_and_the_rest_of_a_long_osc_costs_nothing() -> None:
    long = "x" * 5000
    (note,) = [s for _, s in reference(osc(f"9;{long}".encode()))]
    assert note.text is not None and len(note.text) == MAX_TEXT
    assert note.text.endswith("\u2026")
    scanner = OutputScanner()
    # A huge OSC (a clipboard copy, an image) fed in pieces keeps only a prefix.
    assert scanner.feed(b"\x1b]52;c;") is None
    for _ in range(100):
        assert scanner.feed(b"QUJD" * 16384) is None
        assert len(scanner._payload) <= 4 * MAX_TEXT + 16
    assert scanner.feed(BEL + BEL) == Signal(BELL)
    check(osc(("9;" + "\u00e9" * 600).encode()))  # cut inside UTF-8 at the byte bound


def test_random_streams_agree_with_the_reference() -> None:
    # The bytes that steer the scanner, ESC and BEL most of all, and a few of the rest.
    alphabet = [ESC, ESC, ESC, BEL, BEL, b"]", b"]", b"\\", b"P", b"_", b"9;", b"4;",
                b"777;notify;", b";", b"t", b"[", b"\x18", b"\x1a"]
    rng = random.Random(20261206)
    for _ in range(1500):
        stream = b"".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 16)))
        check(stream, pairs=len(stream) <= 24)
