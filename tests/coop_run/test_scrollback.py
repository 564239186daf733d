"""The scrollback ring: offsets, resume, snapshot, against a naive reference."""

from __future__ import annotations

import random
import time

import pytest

from coop_run.session.config import DEFAULT_CAPACITY
from coop_run.session.scrollback import Scrollback


class Reference:
    """The obvious implementation: keep every byte, slice on demand."""

    def __init__(self, capacity: int, offset: int = 0) -> None:
        self.capacity = capacity
        self.first = offset
        self.data = bytearray()

    def append(self, data: bytes) -> int:
        self.data += data
        return self.end

    @property
    def end(self) -> int:
        return self.first + len(self.data)

    @property
    def start(self) -> int:
        return max(self.first, self.end - self.capacity)

    def read_from(self, offset: int) -> bytes | None:
        if offset < self.start:
            return None
        return bytes(self.data[offset - self.first :])


def check_same(ring: Scrollback, ref: Reference, rng: random.Random) -> None:
    assert (ring.start, ring.end, len(ring)) == (ref.start, ref.end, ref.end - ref.start)
    assert ring.snapshot() == (ref.start, ref.read_from(ref.start))
    probes = {ref.start, ref.end, max(0, ref.start - 1), ref.first}
    probes.update(rng.randint(ref.first, ref.end) for _ in range(4))
    for offset in probes:
        assert ring.read_from(offset) == ref.read_from(offset), offset


@pytest.mark.parametrize("seed", range(12))
def test_random_appends_match_reference(seed: int) -> None:
    rng = random.Random(seed)
    capacity = rng.choice([1, 2, 7, 64, 1000, 4096])
    offset = rng.choice([0, 0, 1, 3, 4096 * 3 + 5])
    ring, ref = Scrollback(capacity, offset=offset), Reference(capacity, offset)
    check_same(ring, ref, rng)
    for _ in range(300):
        size = rng.choice([0, 1, rng.randint(1, capacity), rng.randint(1, 3 * capacity + 2)])
        chunk = rng.randbytes(size)
        assert ring.append(chunk) == ref.append(chunk)
        check_same(ring, ref, rng)


def test_small_example() -> None:
    ring = Scrollback(8)
    assert ring.snapshot() == (0, b"")
    assert ring.append(b"hello") == 5
    assert ring.snapshot() == (0, b"hello")
    assert ring.append(b" world") == 11
    assert (ring.start, ring.end) == (3, 11)
    assert ring.snapshot() == (3, b"lo world")
    assert ring.read_from(9) == b"ld"
    assert ring.read_from(11) == b""
    assert ring.read_from(2) is None
    assert ring.append(b"0123456789abc") == 24
    assert ring.snapshot() == (16, b"56789abc")


def test_accepts_bytearray_and_memoryview_and_copies_them() -> None:
    ring = Scrollback(16)
    buf = bytearray(b"abc")
    ring.append(buf)
    ring.append(memoryview(b"xdefx")[1:4])
    buf[:] = b"zzz"
    assert ring.snapshot() == (0, b"abcdef")


def test_bad_offsets_and_capacities() -> None:
    ring = Scrollback(4)
    ring.append(b"abcdef")
    with pytest.raises(ValueError, match="beyond the end of output \\(6\\)"):
        ring.read_from(7)
    with pytest.raises(ValueError, match="negative"):
        ring.read_from(-1)
    with pytest.raises(TypeError, match="integer"):
        ring.read_from(True)
    for capacity in (0, -1):
        with pytest.raises(ValueError, match="capacity must be positive"):
            Scrollback(capacity)
    for bad in (1.5, True):
        with pytest.raises(TypeError, match="capacity must be an integer"):
            Scrollback(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="offset -1 is negative"):
        Scrollback(4, offset=-1)


def test_default_capacity_is_at_least_spec_minimum() -> None:
    assert Scrollback().capacity == DEFAULT_CAPACITY >= 256 * 1024


def append_rate(capacity: int, total: int, chunk: int = 4096) -> float:
    """MB/s of appending `total` bytes in `chunk`-sized pieces."""
    data = bytes(range(256)) * (chunk // 256)
    ring = Scrollback(capacity)
    began = time.perf_counter()
    for _ in range(total // chunk):
        ring.append(data)
    elapsed = time.perf_counter() - began
    assert ring.end == total // chunk * chunk
    return total / elapsed / 1e6


def test_appending_30mb_is_cheap_and_independent_of_capacity() -> None:
    total = 30 * 1024 * 1024
    small = append_rate(DEFAULT_CAPACITY, total)
    # A ring as large as the whole stream: a copy of what is held on each append would
    # make this one quadratic and thousands of times slower.
    large = append_rate(total, total)
    print(f"scrollback append: {small:.0f} MB/s (256 KiB ring), {large:.0f} MB/s (30 MiB ring)")
    assert small > 100
    assert large > 100
