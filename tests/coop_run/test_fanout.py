"""One PTY's clients: fan-out, bounded backlogs, lag accounting, resume, window size."""

from __future__ import annotations

import random
import time
from collections.abc import Hashable
from typing import Any

import pytest

from coop_run.errors import ProtocolError
from coop_run.session.fanout import Batch, FanOut, Item
from coop_run.session.scrollback import Scrollback


def lagged(n: int) -> dict[str, object]:
    return {"event": "lagged", "bytes": n}


class Receiver:
    """What a well-behaved client does with its frames: track its offset, check the bytes.

    ``stream`` is everything the PTY produced; every raw byte the client gets must be the
    stream's byte at the client's offset, and lagged gaps advance the offset.
    """

    def __init__(self, start: int) -> None:
        self.offset = start
        self.received = bytearray()
        self.events: list[dict[str, object]] = []

    def feed(self, batch: Batch, stream: bytes | bytearray) -> None:
        for item in batch.items:
            if isinstance(item, bytes):
                assert item, "empty raw frame"
                assert item == stream[self.offset : self.offset + len(item)]
                self.offset += len(item)
                self.received += item
            else:
                self.events.append(item)
                if item.get("event") == "lagged":
                    bytes_lost = item["bytes"]
                    assert isinstance(bytes_lost, int) and bytes_lost > 0
                    self.offset += bytes_lost
        assert batch.offset == self.offset


def drain(fan: FanOut, cid: Hashable, rx: Receiver, stream: bytes | bytearray) -> list[Batch]:
    batches = []
    while fan.pending(cid):
        batch = fan.take(cid)
        rx.feed(batch, stream)
        batches.append(batch)
    return batches


def test_window_size_is_the_smallest_client() -> None:
    fan = FanOut()
    assert fan.size() is None
    assert fan.add_client("a", 120, 40).size == (120, 40)
    assert fan.add_client("b", 80, 50).size == (80, 40)
    assert fan.add_client("c", 100, 45).size is None  # smallest unchanged
    assert fan.size() == (80, 40)
    assert fan.resize("c", 200, 60) is None
    assert fan.resize("b", 90, 50) == (90, 40)
    assert fan.resize("a", 100, 30) == (90, 30)
    assert fan.remove_client("a") == (90, 50)
    assert fan.remove_client("c") is None
    assert fan.remove_client("b") is None  # the last one: the PTY keeps its size
    assert fan.size() is None
    assert fan.clients == ()


def test_clients_that_do_not_size_never_change_the_size() -> None:
    """Read-only viewers and "do not size for me" clients (issue 12) get the output and
    keep their window, but the size is the smallest among the others."""
    fan = FanOut()
    assert fan.add_client("viewer", 40, 10, sizing=False).size is None
    assert fan.size() is None  # nobody sizes: the PTY keeps what it has
    assert fan.add_client("desk", 120, 40).size == (120, 40)
    assert fan.resize("viewer", 20, 5) is None
    assert fan.add_client("phone", 50, 20, sizing=False).size is None
    assert fan.size() == (120, 40)
    assert fan.set_sizing("phone", True) == (50, 20)  # it joins the rule
    assert fan.set_sizing("phone", False) == (120, 40)
    assert fan.set_sizing("phone", False) is None
    assert fan.remove_client("desk") is None  # the last sizing client: size kept
    fan.publish(b"seen by all")
    assert b"".join(i for i in fan.take("viewer").items if isinstance(i, bytes)) == \
        b"seen by all"


def test_web_clients_size_only_while_visible_and_active() -> None:
    """A local terminal, a desktop browser and a phone (issue 12 point 7): each call that
    changes what counts says the new size, and ``next_expiry`` says when time alone
    will."""
    fan = FanOut(idle_after=60.0)
    assert fan.add_client("term", 120, 40, now=0.0).size == (120, 40)
    assert fan.add_client("desk", 100, 30, local=False, now=0.0).size == (100, 30)
    assert fan.next_expiry(0.0) == 60.0
    assert fan.add_client("phone", 40, 20, local=False, now=10.0).size == (40, 20)
    assert fan.set_visible("phone", False, now=20.0) == (100, 30)  # its tab hidden
    assert fan.next_expiry(20.0) == 60.0  # the desk's; a hidden phone never expires
    assert fan.touch("phone", now=30.0) is None  # typing in a hidden tab: still hidden
    assert fan.set_visible("phone", True, now=40.0) == (40, 20)  # shown is activity
    assert fan.touch("desk", now=50.0) is None  # it counted already
    assert fan.next_expiry(50.0) == 100.0  # the phone, shown at 40, goes idle first
    assert fan.size(100.0) == (100, 30)  # time alone: the phone no longer counts
    assert fan.size(110.0) == (120, 40)  # nor the desk: the local terminal's size
    assert fan.next_expiry(110.0) is None
    assert fan.touch("phone", now=110.0) == (40, 20)  # active again (typing or "active")
    assert fan.resize("desk", 90, 10, now=120.0) == (40, 10)  # resizing is activity too
    assert fan.set_sizing("phone", False, now=130.0) == (90, 10)  # "do not size for me"
    assert fan.set_sizing("phone", True, now=140.0) == (40, 10)
    assert fan.remove_client("term", now=140.0) is None
    assert fan.remove_client("desk", now=140.0) == (40, 20)


def test_a_read_only_web_client_never_counts_whatever_it_says() -> None:
    fan = FanOut(idle_after=60.0)
    fan.add_client("desk", 100, 30, local=False, now=0.0)
    assert fan.add_client("viewer", 20, 5, local=False, read_only=True, now=1.0).size is None
    for change in (fan.set_sizing("viewer", True, now=2.0),
                   fan.set_visible("viewer", True, now=3.0),
                   fan.touch("viewer", now=4.0),
                   fan.resize("viewer", 10, 3, now=5.0)):
        assert change is None
    assert fan.size(5.0) == (100, 30)
    assert fan.next_expiry(5.0) == 60.0  # only the desk's
    fan.remove_client("desk", now=6.0)
    assert fan.size(6.0) is None  # left alone, it does not size the PTY either


def test_only_idle_web_clients_left_means_the_one_used_last() -> None:
    """The phone leaves while the desktop sits idle: the desktop's size comes back, not
    the phone's kept; with nobody left who may size, the PTY keeps what it has."""
    fan = FanOut(idle_after=60.0)
    fan.add_client("desk", 100, 30, local=False, now=0.0)
    assert fan.add_client("phone", 40, 20, local=False, now=100.0).size == (40, 20)
    assert fan.remove_client("phone", now=110.0) == (100, 30)
    assert fan.set_visible("desk", False, now=120.0) is None  # None: keep (100, 30)
    assert fan.size(120.0) is None


def test_bad_calls_are_refused() -> None:
    fan = FanOut(Scrollback(16), max_backlog=16)
    fan.add_client("a", 80, 24)
    with pytest.raises(ValueError, match="already attached"):
        fan.add_client("a", 80, 24)
    for cols, rows in ((0, 24), (80, 0), (70000, 24)):
        with pytest.raises(ProtocolError, match="from 1 to 65535"):
            fan.add_client("b", cols, rows)
        with pytest.raises(ProtocolError, match="from 1 to 65535"):
            fan.resize("a", cols, rows)
    odd: list[tuple[Any, Any]] = [(80, True), (80.0, 24)]  # what a sloppy JSON peer sends
    for cols, rows in odd:
        with pytest.raises(ProtocolError, match="must be an integer"):
            fan.add_client("b", cols, rows)
        with pytest.raises(ProtocolError, match="must be an integer"):
            fan.resize("a", cols, rows)
    assert fan.size() == (80, 24)
    with pytest.raises(KeyError, match="no client 'zz'"):
        fan.take("zz")
    with pytest.raises(KeyError, match="no client"):
        fan.remove_client("zz")
    with pytest.raises(ValueError, match="beyond the end"):
        fan.add_client("c", 80, 24, resume_from=1)
    assert "c" not in fan
    with pytest.raises(ValueError, match="at least the scrollback capacity"):
        FanOut(Scrollback(1024), max_backlog=1000)
    with pytest.raises(ValueError, match="max_bytes"):
        fan.take("a", 0)


def test_new_client_gets_scrollback_then_live_output() -> None:
    fan = FanOut(Scrollback(8), max_backlog=64)
    fan.publish(b"0123456789")
    attached = fan.add_client(1, 80, 24)
    assert (attached.start, attached.replayed, attached.redraw) == (2, 8, True)
    assert fan.backlog(1) == 8
    fan.publish(b"ab")
    fan.publish(b"")
    batch = fan.take(1)
    assert batch == Batch(items=(b"23456789ab",), offset=12, redraw=False)
    assert not fan.pending(1)
    assert fan.take(1) == Batch(items=(), offset=12, redraw=False)


def test_replay_starts_at_a_line_when_the_beginning_is_gone() -> None:
    fan = FanOut(Scrollback(16), max_backlog=16)
    fan.publish(b"hi\r\n")
    whole = fan.add_client("a", 80, 24)
    assert (whole.start, whole.replayed, whole.redraw) == (0, 4, False)
    assert fan.take("a").items == (b"hi\r\n",)
    fan.publish(b"\x1b[1mone\r\ntwo\r\nabc")  # 21 bytes: the ring starts inside "\x1b[1m"
    late = fan.add_client("b", 80, 24)
    assert (late.start, late.replayed, late.redraw) == (13, 8, True)
    assert fan.take("b") == Batch(items=(b"two\r\nabc",), offset=21, redraw=False)
    fan.remove_client("b")
    # A resume is exact to the byte, never moved to a line start.
    assert fan.add_client("b", 80, 24, resume_from=6).replayed == 15
    assert fan.take("b").items == (b"1mone\r\ntwo\r\nabc",)


def test_publish_reaches_every_client_and_reports_queues() -> None:
    fan = FanOut(Scrollback(16), max_backlog=32)
    fan.add_client("a", 80, 24)
    fan.add_client("b", 80, 24)
    assert [(d.client_id, d.queued, d.lost) for d in fan.publish(b"hi")] == [
        ("a", 2, 0),
        ("b", 2, 0),
    ]
    assert fan.take("a").items == (b"hi",)
    assert [(d.client_id, d.queued) for d in fan.publish(b"!")] == [("a", 1), ("b", 3)]
    assert fan.take("b").items == (b"hi!",)
    assert fan.offset == fan.scrollback.end == 3


def test_take_respects_max_bytes_and_keeps_order() -> None:
    fan = FanOut(Scrollback(16), max_backlog=64)
    fan.add_client("a", 80, 24)
    for chunk in (b"abc", b"defg", b"h"):
        fan.publish(chunk)
    assert fan.take("a", 2) == Batch(items=(b"ab",), offset=2, redraw=False)
    assert fan.take("a", 4) == Batch(items=(b"cdef",), offset=6, redraw=False)
    assert fan.backlog("a") == 2
    assert fan.take("a", 100) == Batch(items=(b"gh",), offset=8, redraw=False)
    assert fan.client_offset("a") == 8


def test_events_keep_their_place_among_the_bytes() -> None:
    fan = FanOut(Scrollback(64), max_backlog=64)
    fan.add_client("a", 80, 24)
    exited = {"event": "pty_exited", "pty": 0, "code": 1}
    fan.publish(b"bye")
    fan.publish_event(exited)
    fan.publish(b"\r\n[restarting]")
    fan.publish_event({"event": "pty_restarting", "pty": 0, "delay_ms": 500})
    exited["code"] = 99  # the caller's dict is not shared with the queue
    batch = fan.take("a")
    assert batch.items == (
        b"bye",
        {"event": "pty_exited", "pty": 0, "code": 1},
        b"\r\n[restarting]",
        {"event": "pty_restarting", "pty": 0, "delay_ms": 500},
    )
    assert batch.offset == 3 + len(b"\r\n[restarting]")
    # A byte budget that ends just before an event still hands the event over.
    fan.publish(b"xy")
    fan.publish_event({"event": "detached"})
    fan.publish(b"z")
    assert fan.take("a", 2).items == (b"xy", {"event": "detached"})
    assert fan.take("a").items == (b"z",)


def test_overflow_drops_backlog_reports_lagged_once_and_asks_redraw_on_take() -> None:
    fan = FanOut(Scrollback(8), max_backlog=10)
    fan.add_client("slow", 80, 24)
    fan.add_client("fast", 80, 24)
    stream = bytearray()
    rx = Receiver(0)
    for chunk in (b"aaaa", b"bbbb", b"cc"):
        stream += chunk
        fan.publish(chunk)
        rx.feed(fan.take("fast"), stream)
    assert fan.backlog("slow") == 10
    stream += b"d"
    deliveries = {d.client_id: d for d in fan.publish(b"d")}
    assert (deliveries["slow"].queued, deliveries["slow"].lost) == (0, 11)
    assert (deliveries["fast"].queued, deliveries["fast"].lost) == (1, 0)
    assert fan.pending("slow") and fan.backlog("slow") == 0
    # Still not reading: more output, another drop, still one lag and one future event.
    fan.publish_event({"event": "pty_exited", "pty": 0, "code": 0})
    rx.feed(fan.take("fast"), stream)
    for chunk in (b"e" * 6, b"f" * 6, b"g" * 3):  # "ffffff" overflows: e and f are lost
        stream += chunk
        fan.publish(chunk)
        rx.feed(fan.take("fast"), stream)
    assert fan.lags("slow") == 1
    assert fan.lost("slow") == 23
    assert fan.backlog("slow") == 3
    batch = fan.take("slow")
    assert batch.redraw
    assert batch.items == (lagged(23), {"event": "pty_exited", "pty": 0, "code": 0}, b"ggg")
    assert batch.offset == len(stream) == 26
    # Reading again: the next episode is a new lag with its own redraw.
    stream += b"h" * 11
    fan.publish(b"h" * 11)  # more than max_backlog in one read: lost for everyone queued
    assert fan.lags("slow") == 2
    assert fan.take("slow") == Batch(items=(lagged(11),), offset=37, redraw=True)
    assert fan.take("slow").redraw is False
    assert fan.lost("fast") == 11 and fan.lags("fast") == 1
    rx.feed(fan.take("fast"), stream)
    assert rx.received == stream[:-11] and rx.offset == len(stream)
    assert rx.events == [{"event": "pty_exited", "pty": 0, "code": 0}, lagged(11)]


def test_client_that_never_reads_never_costs_another_a_byte() -> None:
    """30 MB in random chunks: the reader gets every byte; the stuck one stays bounded."""
    rng = random.Random(4)
    fan = FanOut(Scrollback(256 * 1024), max_backlog=1024 * 1024)
    fan.publish(b"before anyone attached\r\n")
    stream = bytearray(b"before anyone attached\r\n")
    stuck = fan.add_client("stuck", 80, 24)
    reader = Receiver(fan.add_client("reader", 100, 30).start)
    pattern = rng.randbytes(70000)
    total = 30 * 1024 * 1024
    while len(stream) < total:
        size = rng.randint(1, 65536)
        at = rng.randint(0, len(pattern) - size)
        chunk = pattern[at : at + size]
        stream += chunk
        for delivery in fan.publish(chunk):
            if delivery.client_id == "reader":
                assert delivery.lost == 0
        assert fan.backlog("stuck") <= fan.max_backlog
        if rng.random() < 0.7:  # the reader is quick but not instant
            drain(fan, "reader", reader, stream)
    drain(fan, "reader", reader, stream)
    assert reader.received == stream
    assert reader.offset == fan.offset == len(stream)
    assert fan.lost("reader") == 0
    # The stuck client lagged once; when it wakes it learns exactly what it missed.
    assert fan.lags("stuck") == 1
    late = Receiver(stuck.start)
    batches = drain(fan, "stuck", late, stream)
    assert batches[0].redraw and batches[0].items[0] == lagged(fan.lost("stuck"))
    assert late.offset == len(stream)
    assert len(late.received) + fan.lost("stuck") == len(stream) - stuck.start


def test_resume_from_an_offset_still_held_gets_exactly_the_missing_bytes() -> None:
    fan = FanOut(Scrollback(16), max_backlog=16)
    fan.add_client("phone", 40, 20)
    fan.publish(b"hello ")
    batch = fan.take("phone")
    fan.remove_client("phone")  # the phone slept
    fan.publish(b"world")
    attached = fan.add_client("phone", 40, 20, resume_from=batch.offset)
    assert (attached.start, attached.replayed) == (6, 5)
    assert fan.take("phone") == Batch(items=(b"world",), offset=11, redraw=False)
    # Resuming exactly at the end: nothing to send.
    fan.remove_client("phone")
    fan.add_client("phone", 40, 20, resume_from=11)
    assert not fan.pending("phone")


def test_resume_from_an_offset_overwritten_is_a_lag_with_redraw() -> None:
    fan = FanOut(Scrollback(8), max_backlog=8)
    fan.publish(b"0123456789abcdef")
    attached = fan.add_client("phone", 40, 20, resume_from=3)
    assert (attached.start, attached.replayed) == (3, 0)
    assert fan.lost("phone") == 13 and fan.lags("phone") == 1
    fan.publish(b"!")
    assert fan.take("phone") == Batch(items=(lagged(13), b"!"), offset=17, redraw=True)


@pytest.mark.parametrize("seed", range(8))
def test_random_operations_keep_every_client_consistent(seed: int) -> None:
    """Random publishes, events, takes, attaches and resumes against the plain stream."""
    rng = random.Random(seed)
    capacity = rng.choice([16, 100, 1000])
    fan = FanOut(Scrollback(capacity), max_backlog=capacity + rng.choice([0, 5, 500]))
    stream = bytearray()
    receivers: dict[int, Receiver] = {}
    windows: dict[int, tuple[int, int]] = {}
    next_id = 0
    for _ in range(600):
        roll = rng.random()
        if roll < 0.35:
            chunk = rng.randbytes(
                rng.choice([1, rng.randint(1, capacity), rng.randint(1, 2 * capacity)])
            )
            stream += chunk
            for delivery in fan.publish(chunk):
                assert delivery.queued == fan.backlog(delivery.client_id) <= fan.max_backlog
        elif roll < 0.40:
            fan.publish_event({"event": "pty_exited", "n": len(stream)})
        elif roll < 0.70 and receivers:
            cid = rng.choice(list(receivers))
            batch = fan.take(cid, rng.choice([1, 3, capacity, 10**9]))
            receivers[cid].feed(batch, stream)
            assert fan.client_offset(cid) == receivers[cid].offset
        elif roll < 0.80 or not receivers:
            cols, rows = rng.randint(1, 300), rng.randint(1, 100)
            resume = rng.choice([None, rng.randint(0, len(stream))])
            attached = fan.add_client(next_id, cols, rows, resume_from=resume)
            receivers[next_id] = Receiver(attached.start)
            windows[next_id] = (cols, rows)
            next_id += 1
        elif roll < 0.90:
            cid = rng.choice(list(receivers))
            windows[cid] = (rng.randint(1, 300), rng.randint(1, 100))
            fan.resize(cid, *windows[cid])
        else:
            cid = rng.choice(list(receivers))
            rx = receivers.pop(cid)
            drain(fan, cid, rx, stream)
            assert rx.offset == len(stream)
            del windows[cid]
            fan.remove_client(cid)
        expected = (
            (min(c for c, _ in windows.values()), min(r for _, r in windows.values()))
            if windows
            else None
        )
        assert fan.size() == expected
    for cid, rx in receivers.items():
        drain(fan, cid, rx, stream)
        assert rx.offset == len(stream)


def test_publish_throughput() -> None:
    fan = FanOut()
    fan.add_client("a", 80, 24)
    fan.add_client("b", 80, 24)
    chunk = bytes(range(256)) * 64  # 16 KiB, a typical PTY read
    total = 30 * 1024 * 1024
    items: list[Item] = []
    began = time.perf_counter()
    for _ in range(total // len(chunk)):
        fan.publish(chunk)
        items.extend(fan.take("a").items)
    elapsed = time.perf_counter() - began
    rate = total / elapsed / 1e6
    print(f"fan-out publish+take: {rate:.0f} MB/s (one reading, one stuck client)")
    assert sum(len(i) for i in items if isinstance(i, bytes)) == total
    assert rate > 100
