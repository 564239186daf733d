"""A PTY's attention rules (``session.attention``), pure: the clock is passed in."""

from __future__ import annotations

import pytest

from coop_run.session.attention import SILENCE, Attention, is_report
from coop_run.session.termscan import BELL, NOTIFICATION, Signal

BURST, QUIET = 100, 5.0
BEL = b"\x07"


def note(text: str) -> bytes:
    return b"\x1b]9;" + text.encode() + BEL


@pytest.fixture
def att() -> Attention:
    return Attention(burst=BURST, quiet=QUIET)


def test_a_mark_is_announced_once_and_only_replaced_by_more(att: Attention) -> None:
    assert att.output(b"hello", 1.0) is None and att.mark is None
    assert att.output(BEL, 1.1) == Signal(BELL)
    assert att.output(BEL + BEL, 1.2) is None  # still the same bell
    assert att.output(note("done"), 1.3) == Signal(NOTIFICATION, "done")
    assert att.output(note("done"), 1.4) is None
    assert att.output(BEL, 1.5) is None  # a bell says less than the notification
    assert att.output(note("again"), 1.6) == Signal(NOTIFICATION, "again")
    assert att.mark == Signal(NOTIFICATION, "again")


def test_typing_clears_the_mark_and_reports_are_not_typing(att: Attention) -> None:
    assert att.typed(b"x") is False  # nothing to clear
    att.output(BEL, 1.0)
    for report in (b"\x1b[12;40R", b"\x1b[?1;2c", b"\x1b[>0;10;1c", b"\x1b[0n", b"\x1b[I",
                   b"\x1b[O", b"\x1b]11;rgb:0000/0000/0000\x1b\\", b"\x1b]10;rgb:f/f/f\x07",
                   b"\x1bP1$r0m\x1b\\", b"\x1b[?2026;2$y", b"\x1b[?1u", b"\x1b[4;600;800t",
                   b"\x1b[12;40R\x1b[?62c"):
        assert is_report(report), report
        assert att.typed(report) is False and att.mark == Signal(BELL), report
    for key in (b"a", b"\r", b"\x1b", b"\x1b[A", b"\x1bOP", b"\x1b[3~", b"\x1b[<0;10;5M",
                b"\x1b[12;40Rx", b"\x03"):
        assert not is_report(key), key
    assert att.typed(b"\x1b[A") is True and att.mark is None
    assert att.typed(b"y") is False


def test_silence_after_a_burst(att: Attention) -> None:
    assert att.output(b"x" * (BURST - 1), 10.0) is None
    assert att.silence_due() is None  # not a burst yet
    assert att.output(b"x", 11.0) is None
    assert att.silence_due() == 11.0 + QUIET
    assert att.check_silence(15.9) is None  # early: still due at 16
    assert att.output(b"more", 12.0) is None
    assert att.silence_due() == 12.0 + QUIET  # output pushes it back
    assert att.check_silence(16.0) is None
    assert att.check_silence(17.0) == Signal(SILENCE) == att.mark
    assert att.silence_due() is None  # once per burst
    assert att.output(b"y" * BURST, 18.0) is None  # marked already: nothing new
    assert att.silence_due() is None
    assert att.output(BEL, 18.5) == Signal(BELL)  # more than silence
    assert att.typed(b"k") is True
    assert att.output(b"z" * BURST, 19.0) is None  # a new burst after typing
    assert att.check_silence(19.0 + QUIET) == Signal(SILENCE)


def test_typing_during_a_burst_starts_it_over(att: Attention) -> None:
    att.output(b"x" * BURST, 1.0)
    assert att.silence_due() is not None
    att.typed(b"q")
    assert att.silence_due() is None and att.check_silence(100.0) is None
    att.output(b"x" * (BURST - 1), 2.0)  # the answer to what was typed: small
    assert att.silence_due() is None


def test_a_trickle_with_quiet_gaps_is_never_a_burst(att: Attention) -> None:
    now = 0.0
    for _ in range(50):  # a clock redrawn every 10 s: 50 x 10 bytes, never 100 in a run
        now += 2 * QUIET
        assert att.output(b"12:00:00\r\n", now) is None
        assert att.silence_due() is None


def test_silence_found_late_is_announced_by_the_next_output(att: Attention) -> None:
    """The loop read new output before running the due timer: the silence was real."""
    att.output(b"x" * BURST, 1.0)
    assert att.output(b"later", 1.0 + QUIET + 3) == Signal(SILENCE)
    assert att.output(b"\x1b]9;late\x07", 30.0) == Signal(NOTIFICATION, "late")


def test_silence_can_be_turned_off() -> None:
    att = Attention(burst=BURST, quiet=0)
    att.output(b"x" * 10 * BURST, 1.0)
    assert att.silence_due() is None and att.check_silence(1e9) is None
    assert att.output(b"x", 1e9) is None


def test_a_new_process_starts_a_new_stream(att: Attention) -> None:
    assert att.output(b"\x1bPunfinished" + b"x" * BURST, 1.0) is None  # died in a DCS
    att.new_stream()
    assert att.silence_due() is None  # the dead process's burst is not waiting for anyone
    assert att.output(BEL, 1.0 + 2 * QUIET) == Signal(BELL)  # and no late silence either
