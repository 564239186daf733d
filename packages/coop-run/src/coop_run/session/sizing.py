"""Which clients' windows size a PTY (SPEC 7.2, 13; issue 12 point 7), pure: no clock,
no I/O; the caller passes ``now`` (monotonic seconds) and arms the timer.

A PTY takes the smallest window (min columns, min rows) of the clients that count:

- a local terminal (``coop attach``) always counts, as SPEC 7.2 has it: local clients
  keep "the smallest attached client" among themselves;
- a web or tunnel client counts only while it is writable, sizing (it did not join or
  switch to "do not size for me"), visible (its tab is shown) and active: something
  happened at it within the idle window (it joined, typed, resized, was shown again, or
  said ``active``). So a phone on the table stops squeezing the desktop's agent once it
  has been left alone for the window, and a background tab never does;
- a read-only viewer never counts, whatever it says.

When no client counts, the web clients that are only idle (sizing, visible, writable)
decide: the most recently active of them (the smallest, if several were active at the
same moment). That is the screen the user was last at: the desktop left alone while a
phone was used gets its own size back when the phone leaves, instead of keeping the
phone's. When none of those is left either (hidden tabs, "do not size for me", viewers,
or no client at all) the size is ``None``: the PTY keeps what it has, and is never
shrunk to a window that does not count.

Idle expiry changes the size without any event: ``next_expiry`` says when the earliest
counting web client stops counting, and the caller recomputes then (one timer, armed
for the earliest due, re-armed from there).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass
class Window:
    """One client as the rule sees it."""

    cols: int
    rows: int
    local: bool = True         # a local terminal: counts whatever else (SPEC 7.2)
    sizing: bool = True        # it did not ask "do not size for me"
    writable: bool = True      # false: a read-only viewer, which never counts
    visible: bool = True       # its view is shown (a web client's tab)
    active_at: float = 0.0     # when it last joined, typed, resized, was shown, said active


def counts(window: Window, now: float, idle_after: float) -> bool:
    """Whether this window sizes the PTY at ``now``."""
    if not (window.sizing and window.writable):
        return False
    if window.local:
        return True
    return window.visible and now - window.active_at < idle_after


def window_size(windows: Iterable[Window], now: float,
                idle_after: float) -> tuple[int, int] | None:
    """The PTY's ``(cols, rows)`` at ``now``, or ``None`` to keep the size it has."""
    windows = list(windows)
    counting = [w for w in windows if counts(w, now, idle_after)]
    if not counting:  # the web clients that are only idle, if any: the one used last
        idle = [w for w in windows if w.sizing and w.writable and w.visible]
        if not idle:
            return None
        latest = max(w.active_at for w in idle)
        counting = [w for w in idle if w.active_at == latest]
    return min(w.cols for w in counting), min(w.rows for w in counting)


def next_expiry(windows: Iterable[Window], now: float, idle_after: float) -> float | None:
    """When the next counting web client goes idle (a time after ``now``), or ``None``."""
    due = [w.active_at + idle_after for w in windows
           if not w.local and counts(w, now, idle_after)]
    return min(due, default=None)
