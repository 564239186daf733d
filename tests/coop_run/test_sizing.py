"""Which clients' windows size a PTY (``session.sizing``, issue 12 point 7), without a
process: a local terminal, a desktop browser and a phone, at chosen moments."""

from __future__ import annotations

from typing import Any

import pytest

from coop_run.session.config import WEB_IDLE, web_idle
from coop_run.session.sizing import Window, counts, next_expiry, window_size

IDLE = 300.0


def local(cols: int, rows: int, **changes: Any) -> Window:
    return Window(cols, rows, **changes)


def web(cols: int, rows: int, active_at: float = 0.0, **changes: Any) -> Window:
    return Window(cols, rows, local=False, active_at=active_at, **changes)


def test_a_web_client_counts_while_writable_sizing_visible_and_recently_active() -> None:
    phone = web(40, 20, active_at=100.0)
    assert counts(phone, 100.0, IDLE)
    assert counts(phone, 100.0 + IDLE - 0.001, IDLE)
    assert not counts(phone, 100.0 + IDLE, IDLE)  # the window is half-open: idle at due
    for change in ({"visible": False}, {"sizing": False}, {"writable": False}):
        assert not counts(web(40, 20, active_at=100.0, **change), 100.0, IDLE), change


def test_a_local_terminal_always_counts_unless_it_opts_out() -> None:
    assert counts(local(120, 40, visible=False, active_at=0.0), 10 * IDLE, IDLE)
    assert not counts(local(120, 40, sizing=False), 0.0, IDLE)
    assert not counts(local(120, 40, writable=False), 0.0, IDLE)


def test_the_size_is_the_smallest_counting_window() -> None:
    terminal, desk = local(120, 40), web(100, 30, active_at=0.0)
    phone = web(40, 50, active_at=10.0)
    assert window_size([terminal], 0.0, IDLE) == (120, 40)
    assert window_size([terminal, desk], 5.0, IDLE) == (100, 30)
    assert window_size([terminal, desk, phone], 20.0, IDLE) == (40, 30)  # per dimension
    # the desk goes idle first, then the phone: back to the local terminal alone
    assert window_size([terminal, desk, phone], IDLE + 5.0, IDLE) == (40, 40)
    assert window_size([terminal, desk, phone], IDLE + 10.0, IDLE) == (120, 40)


def test_hidden_read_only_and_do_not_size_clients_never_shrink_it() -> None:
    desk = web(100, 30, active_at=50.0)
    others = [web(40, 20, active_at=60.0, visible=False),
              web(30, 10, active_at=60.0, writable=False),
              web(20, 5, active_at=60.0, sizing=False)]
    assert window_size([desk, *others], 60.0, IDLE) == (100, 30)
    # alone, they never size the PTY either: it keeps what it has
    assert window_size(others, 60.0, IDLE) is None
    assert window_size([], 60.0, IDLE) is None
    # ...even long after, and a local terminal's opt-out holds the same way
    assert window_size([*others, local(10, 5, sizing=False)], 10 * IDLE, IDLE) is None


def test_when_only_idle_web_clients_are_left_the_one_used_last_decides() -> None:
    """The phone (used last) leaves while the desktop sat idle: the desktop gets its own
    size back rather than keeping the phone's; among idle ones the latest wins, a tie
    takes the smallest of the tied, and hidden ones are not asked."""
    desk = web(100, 30, active_at=0.0)
    assert window_size([desk], 2 * IDLE, IDLE) == (100, 30)
    phone = web(40, 20, active_at=IDLE + 1.0)
    assert window_size([desk, phone], IDLE + 2.0, IDLE) == (40, 20)  # only the phone counts
    assert window_size([desk, phone], 3 * IDLE, IDLE) == (40, 20)  # both idle: the latest
    tablet = web(60, 50, active_at=IDLE + 1.0)
    assert window_size([desk, phone, tablet], 3 * IDLE, IDLE) == (40, 20)
    assert window_size([desk, tablet], 3 * IDLE, IDLE) == (60, 50)
    hidden = web(50, 25, active_at=2 * IDLE, visible=False)
    assert window_size([desk, hidden], 3 * IDLE, IDLE) == (100, 30)


def test_next_expiry_is_the_earliest_counting_web_client_going_idle() -> None:
    windows = [local(120, 40), web(100, 30, active_at=10.0), web(40, 20, active_at=30.0),
               web(20, 10, active_at=5.0, visible=False),   # does not count: no expiry
               web(20, 10, active_at=6.0, writable=False)]
    assert next_expiry(windows, 30.0, IDLE) == 10.0 + IDLE
    assert next_expiry(windows, 10.0 + IDLE, IDLE) == 30.0 + IDLE
    assert next_expiry(windows, 30.0 + IDLE, IDLE) is None  # nothing left to expire
    assert next_expiry([local(80, 24)], 0.0, IDLE) is None


@pytest.mark.parametrize(("value", "expected"), [
    ("3", 3.0), ("0.5", 0.5), ("", WEB_IDLE), ("0", WEB_IDLE), ("-2", WEB_IDLE),
    ("nan", WEB_IDLE), ("inf", WEB_IDLE), ("soon", WEB_IDLE),
])
def test_the_idle_window_can_be_shortened_by_the_environment(value: str,
                                                             expected: float) -> None:
    assert web_idle({"COOP_WEB_IDLE_SECONDS": value}) == expected
    assert web_idle({}) == WEB_IDLE == 300.0
