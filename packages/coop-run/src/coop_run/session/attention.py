"""When a PTY wants the user (SPEC 13 "Attention"), apart from I/O and clocks (pure).

A PTY is marked on a bell or a notification in its output (found by ``termscan``), or,
like tmux's ``monitor-silence``, when it falls quiet after a burst: a run of output
(no gap of ``quiet`` seconds in it) of at least ``burst`` bytes since a client last typed,
then ``quiet`` seconds without output. The burst rule keeps an idle prompt, a keystroke's
echo or a clock that ticks once a minute from ever counting as "done, your turn".
A client typing clears the mark and starts the count over; what a terminal answers by
itself (a cursor position report, device attributes, a focus event) is not typing.

A mark is announced once: a repeated bell, or silence while marked, changes nothing; a
notification replaces a bell or silence, a bell replaces silence, and a notification
with a new text replaces the last. Silence marks once per burst.

The supervisor owns the clock and the timer (``session.ptys``): it passes ``now``
(monotonic seconds) in, arms a timer for ``silence_due()`` and calls
``check_silence(now)`` when it fires.
"""

from __future__ import annotations

import re
from typing import Final

from coop_run.session.termscan import BELL, NOTIFICATION, OutputScanner, Signal

SILENCE: Final = "silence"
_RANK: Final = {SILENCE: 0, BELL: 1, NOTIFICATION: 2}

# Input that is only what a terminal sends by itself, never a key: cursor position
# (CPR; xterm's Ctrl+F3 looks the same, a price worth paying), device attributes, status
# and mode reports, focus in/out, window reports, OSC replies (colours), DCS/APC replies
# (DECRQSS, XTGETTCAP), the kitty keyboard protocol's flags reply.
_REPORTS: Final = re.compile(
    rb"(?:\x1b\[\??[0-9;]*R|\x1b\[[?>=][0-9;]*c|\x1b\[\??[0-9;]*n|\x1b\[\??[0-9;]*\$y"
    rb"|\x1b\[[IO]|\x1b\[[0-9;]*t|\x1b\[\?[0-9]*u|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)"
    rb"|\x1b[P_][^\x1b]*\x1b\\)+")


def is_report(data: bytes) -> bool:
    """Whether ``data`` (a client's input) is only terminal reports, not typing."""
    return data[:1] == b"\x1b" and _REPORTS.fullmatch(data) is not None


class Attention:
    """One PTY's mark: what sets it, what clears it, when silence is due."""

    __slots__ = ("_last", "_run", "_scanner", "burst", "mark", "quiet")

    def __init__(self, *, burst: int, quiet: float) -> None:
        """``burst``: bytes of output that make a burst; ``quiet``: seconds of silence
        after it (0 or less: silence never marks)."""
        self.burst = burst
        self.quiet = quiet
        self.mark: Signal | None = None
        self._scanner = OutputScanner()
        self._run = 0  # output bytes of the current run since a client typed
        self._last = 0.0  # when the last output came (monotonic seconds)

    def output(self, data: bytes, now: float) -> Signal | None:
        """A chunk of the PTY's output at ``now``: the new mark to announce, if any."""
        announce = None
        if now - self._last >= self.quiet:  # a gap: the run before it has been judged
            # (by the timer, unless this output was read first in the same loop turn)
            announce = self.check_silence(self._last + self.quiet)
            self._run = 0
        self._run += len(data)
        self._last = now
        found = self._scanner.feed(data)
        if found is not None and _outranks(found, self.mark):
            self.mark = announce = found
        return announce

    def new_stream(self) -> None:
        """A new process writes behind this PTY: forget the old one's open sequence and
        its burst (the mark stays until a client types)."""
        self._scanner = OutputScanner()
        self._run = 0

    def typed(self, data: bytes) -> bool:
        """A client sent ``data``; whether that cleared the mark (to announce)."""
        if is_report(data):
            return False
        self._run = 0
        if self.mark is None:
            return False
        self.mark = None
        return True

    def silence_due(self) -> float | None:
        """When silence would mark the PTY (monotonic), or ``None`` while it cannot."""
        if self.mark is not None or self.quiet <= 0 or self._run < self.burst:
            return None
        return self._last + self.quiet

    def check_silence(self, now: float) -> Signal | None:
        """The timer fired: the silence mark to announce, if it is due by ``now``."""
        due = self.silence_due()
        if due is None or now < due:
            return None
        self._run = 0
        self.mark = Signal(SILENCE)
        return self.mark


def _outranks(new: Signal, old: Signal | None) -> bool:
    if old is None:
        return True
    if new.reason == old.reason:
        return new.reason == NOTIFICATION and new.text != old.text
    return _RANK[new.reason] > _RANK[old.reason]
