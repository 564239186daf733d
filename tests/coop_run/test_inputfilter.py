"""The input filter (SPEC 7.3): every blocked sequence at every cut and typed a byte per
message, overlapping sequences, the 500 ms hold on an injected clock, Ctrl+C debounce,
the notice, and property tests against a byte-at-a-time model of the same rule."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from coop_build.coopfile import InputFilterTable
from coop_run.inputfilter import (
    BLOCKED_NOTICE,
    DEBOUNCED_NOTICE,
    DEFAULT_SEQUENCES,
    HOLD_SECONDS,
    Blocked,
    InputFilter,
    Output,
    Rules,
    applies,
)
from coop_run.ipc import protocol, schema

DEFAULTS = [seq for _, seq in DEFAULT_SEQUENCES]
# Custom sequences that overlap the defaults and each other: a bracketed-paste end, one
# that is a suffix of another, and one whose start is another's end.
CUSTOM = [b"\x1b[201~", b"[201~", b"rm -rf /\r", b"/\rX"]
BEFORE, AFTER = b"<<", b">>"


def run(flt: InputFilter, chunks: Iterable[tuple[bytes, float]]) -> tuple[bytes, list[Blocked]]:
    """Feed each chunk at its time; what reached the PTY (held bytes flushed at the end)
    and what was kept from it."""
    out = bytearray()
    blocked: list[Blocked] = []
    last = 0.0
    for data, now in chunks:
        result = flt.feed(data, now)
        out += result.forward
        blocked += result.blocked
        last = now
    out += flt.flush_due(last + HOLD_SECONDS).forward
    assert flt.deadline() is None
    return bytes(out), blocked


def cuts(data: bytes) -> Iterable[list[bytes]]:
    """``data`` cut at every subset of its byte boundaries."""
    for mask in range(1 << max(len(data) - 1, 0)):
        pieces, start = [], 0
        for i in range(1, len(data)):
            if mask >> (i - 1) & 1:
                pieces.append(data[start:i])
                start = i
        pieces.append(data[start:])
        yield pieces


# --- every sequence, every cut ----------------------------------------------------------

@pytest.mark.parametrize("seq", DEFAULTS + CUSTOM, ids=repr)
def test_every_blocked_sequence_at_every_cut_is_kept_from_the_pty(seq: bytes) -> None:
    rules = Rules(CUSTOM)
    for pieces in cuts(BEFORE + seq + AFTER):
        out, blocked = run(InputFilter(rules), ((p, 1.0) for p in pieces))
        assert out == BEFORE + AFTER, pieces
        assert blocked, pieces


@pytest.mark.parametrize("seq", DEFAULTS + CUSTOM, ids=repr)
@pytest.mark.parametrize("gap", [0.0, 0.1, HOLD_SECONDS - 0.001])
def test_every_blocked_sequence_typed_a_byte_per_message(seq: bytes, gap: float) -> None:
    flt = InputFilter(Rules(CUSTOM))
    typed = BEFORE + seq + AFTER
    out, blocked = run(flt, ((typed[i : i + 1], 100 + i * gap) for i in range(len(typed))))
    assert out == BEFORE + AFTER
    assert len(blocked) == 1


@pytest.mark.parametrize("seq", DEFAULTS + CUSTOM, ids=repr)
def test_a_slow_typist_never_completes_a_blocked_sequence(seq: bytes) -> None:
    """Held bytes go out after 500 ms, but the automaton keeps its place: the byte that
    would complete the sequence is dropped."""
    flt = InputFilter(Rules(CUSTOM))
    out = bytearray()
    now = 100.0
    for byte in BEFORE + seq + AFTER:
        out += flt.feed(bytes((byte,)), now).forward
        now += 1.0
        out += flt.flush_due(now).forward
    assert bytes(out) == BEFORE + seq[:-1] + AFTER


def test_the_names_of_the_default_sequences() -> None:
    names = {seq: name for name, seq in DEFAULT_SEQUENCES}
    assert names == {b"\x04": "ctrl-d", b"\x1c": "ctrl-backslash",
                     b"exit\r": "exit", b"exit\n": "exit", b"/exit\r": "/exit",
                     b"/exit\n": "/exit", b"quit\r": "quit", b"quit\n": "quit"}
    flt = InputFilter(Rules())
    assert flt.feed(b"ok /exit\nthen quit\r", 0).blocked == (
        Blocked("/exit", "blocked"), Blocked("quit", "blocked"))
    assert flt.feed(b"exit", 0).forward == b""
    assert flt.feed(b"\r", 0) == Output(b"", (Blocked("exit", "blocked"),))
    assert flt.feed(b"exit ok\x1c", 0) == Output(b"exit ok", (Blocked("ctrl-backslash",
                                                                       "blocked"),))
    # Only these: other control bytes and other words pass at once.
    assert flt.feed(b"\x05\x1a\x1b\x7fexits\rExit\r", 0).forward == b"\x05\x1a\x1b\x7fexits\rExit\r"


# --- overlapping sequences --------------------------------------------------------------

def test_a_sequence_that_ends_another_is_named_by_the_longer() -> None:
    flt = InputFilter(Rules())
    assert flt.feed(b"a/exit\rb", 0) == Output(b"ab", (Blocked("/exit", "blocked"),))


def test_a_sequence_that_starts_another_wins_before_the_longer_completes() -> None:
    flt = InputFilter(Rules([b"ex"]))
    out, blocked = run(flt, [(b"exit\r", 0)])
    assert out == b"it\r"
    assert blocked == [Blocked("block_sequences[0]", "blocked")]


def test_a_sequence_inside_another_is_dropped_and_the_rest_goes_on() -> None:
    flt = InputFilter(Rules([b"it"]))
    out, blocked = run(flt, [(b"e", 0), (b"x", 0), (b"i", 0), (b"t", 0), (b"\r", 0)])
    assert out == b"ex\r"
    assert blocked == [Blocked("block_sequences[0]", "blocked")]


def test_a_repeated_default_keeps_its_name() -> None:
    flt = InputFilter(Rules([b"exit\r"]))
    assert flt.feed(b"exit\r", 0).blocked == (Blocked("exit", "blocked"),)


def test_what_is_dropped_does_not_join_what_surrounds_it() -> None:
    """The automaton reads the stream the PTY gets: dropping ``\\x04`` out of
    ``ex\\x04it\\r`` leaves ``exit\\r``, which is blocked in turn."""
    flt = InputFilter(Rules())
    out, blocked = run(flt, [(b"ex", 0), (b"\x04", 0), (b"it\r", 0)])
    assert out == b""
    assert blocked == [Blocked("ctrl-d", "blocked"), Blocked("exit", "blocked")]
    # The same in one paste, long enough for the fast scan, with the bytes held before
    # the drop going on from where they were.
    flt = InputFilter(Rules([b"abXY", b"Z"]))
    out, blocked = run(flt, [(b"." * 50 + b"abZ" + b"." * 50 + b"abZXY.", 0)])
    assert out == b"." * 50 + b"ab" + b"." * 50 + b"."
    assert blocked == [Blocked("block_sequences[1]", "blocked", 2),
                       Blocked("block_sequences[0]", "blocked")]


# --- the 500 ms hold --------------------------------------------------------------------

def test_held_bytes_are_flushed_500_ms_after_the_last_input_exactly() -> None:
    flt = InputFilter(Rules())
    assert flt.deadline() is None
    assert flt.feed(b"say e", 10.0).forward == b"say "
    assert flt.deadline() == 10.5
    assert flt.flush_due(math.nextafter(10.5, 0)) == Output()
    assert flt.feed(b"x", 10.3).forward == b""
    assert flt.deadline() == 10.8
    assert flt.flush_due(10.5) == Output()
    assert flt.flush_due(math.nextafter(10.8, 0)) == Output()
    assert flt.flush_due(10.8) == Output(b"ex")
    assert flt.deadline() is None
    assert flt.flush_due(20.0) == Output()


def test_a_byte_that_ends_the_possible_match_releases_what_was_held() -> None:
    flt = InputFilter(Rules())
    assert flt.feed(b"ex", 0).forward == b""
    assert flt.feed(b"p", 0.1) == Output(b"exp")
    assert flt.deadline() is None


def test_input_after_the_deadline_flushes_first_even_without_a_timer() -> None:
    """A late ``flush_due`` changes nothing: the held bytes went out at the deadline."""
    flt = InputFilter(Rules())
    assert flt.feed(b"exi", 10.0).forward == b""
    assert flt.feed(b"t\r", 10.5) == Output(b"exi", (Blocked("exit", "blocked"),))
    flt = InputFilter(Rules())
    assert flt.feed(b"exi", 10.0).forward == b""
    assert flt.feed(b"t\r", math.nextafter(10.5, 0)) == Output(b"", (Blocked("exit",
                                                                              "blocked"),))


def test_an_empty_feed_is_no_input() -> None:
    flt = InputFilter(Rules())
    flt.feed(b"q", 1.0)
    assert flt.feed(b"", 1.4) == Output()
    assert flt.deadline() == 1.5
    assert flt.feed(b"", 1.5) == Output(b"q")


# --- Ctrl+C debounce --------------------------------------------------------------------

def test_ctrl_c_passes_once_per_window_and_the_rest_are_dropped() -> None:
    flt = InputFilter(Rules())
    debounced = Output(b"", (Blocked("ctrl-c", "debounced"),))
    assert flt.feed(b"\x03", 5.0) == Output(b"\x03")
    assert flt.feed(b"\x03", 5.2) == debounced
    assert flt.feed(b"\x03", math.nextafter(5.5, 0)) == debounced
    assert flt.feed(b"\x03", 5.5) == Output(b"\x03")  # a dropped one does not extend it
    assert flt.feed(b"a\x03b\x03\x03c", 5.6) == Output(b"abc", (Blocked("ctrl-c", "debounced",
                                                                        3),))
    assert flt.feed(b"\x03\x03\x03", 6.0) == Output(b"\x03", (Blocked("ctrl-c", "debounced",
                                                                      2),))


def test_ctrl_c_debounce_follows_the_coopfile() -> None:
    table = InputFilterTable(ctrl_c_debounce_ms=100)
    flt = InputFilter(Rules(table.blocked_bytes(), ctrl_c_debounce_ms=table.ctrl_c_debounce_ms))
    assert flt.feed(b"\x03", 1.0).forward == b"\x03"
    assert flt.feed(b"\x03", 1.05).forward == b""
    assert flt.feed(b"\x03", 1.1).forward == b"\x03"
    off = InputFilter(Rules(ctrl_c_debounce_ms=0))
    assert off.feed(b"\x03\x03\x03", 1.0) == Output(b"\x03\x03\x03")


def test_a_dropped_ctrl_c_does_not_split_a_blocked_sequence() -> None:
    flt = InputFilter(Rules())
    assert flt.feed(b"\x03", 0.0).forward == b"\x03"
    out = flt.feed(b"exi\x03t\r", 0.1)
    assert out == Output(b"", (Blocked("ctrl-c", "debounced"), Blocked("exit", "blocked")))


# --- the notice, the event, the configuration -------------------------------------------

def test_the_notice_is_spec_7_3s_once_per_output() -> None:
    spec = "\r\n\x1b[1;33m⚠  Blocked from web. Use local terminal to exit.\x1b[0m\r\n"
    assert spec.encode() == BLOCKED_NOTICE
    flt = InputFilter(Rules())
    out = flt.feed(b"\x04" * 1000 + b"\x1c", 0)
    assert out.forward == b""
    assert out.blocked == (Blocked("ctrl-d", "blocked", 1000),
                           Blocked("ctrl-backslash", "blocked"))
    assert out.notice == BLOCKED_NOTICE
    flt.feed(b"\x03", 0)
    assert flt.feed(b"\x03\x04", 0).notice == DEBOUNCED_NOTICE + BLOCKED_NOTICE
    assert flt.feed(b"ls\r", 0).notice == b""


def test_a_custom_sequence_is_named_never_shown() -> None:
    table = InputFilterTable(block_sequences=["hunter2", "rm -rf /\\r"])
    flt = InputFilter(Rules(table.blocked_bytes()))
    out = flt.feed(b"echo hunter2; rm -rf /\r", 0)
    assert out.forward == b"echo ; "
    assert [b.sequence for b in out.blocked] == ["block_sequences[0]", "block_sequences[1]"]
    events = [schema.encode(protocol.Blocked(0, b.sequence, b.reason, b.count))
              for b in out.blocked]
    assert events[0] == {"event": "blocked", "pty": 0, "sequence": "block_sequences[0]",
                         "reason": "blocked", "count": 1}
    assert "hunter2" not in repr(events) + repr(out.blocked) + out.notice.decode()


def test_bad_rules_are_refused() -> None:
    with pytest.raises(ValueError, match=r"block_sequences\[1\] is empty"):
        Rules([b"x", b""])
    with pytest.raises(ValueError, match="ctrl_c_debounce_ms must be >= 0"):
        Rules(ctrl_c_debounce_ms=-1)


@pytest.mark.parametrize(("kind", "role"),
                         list(itertools.product(protocol.CLIENT_KINDS, ("agent", "shell"))))
def test_only_web_and_tunnel_clients_on_the_agent_are_filtered(kind: str, role: str) -> None:
    assert applies(kind, role) == (kind in ("web", "tunnel") and role == "agent")


# --- properties -------------------------------------------------------------------------

def model(patterns: Sequence[bytes], chunks: Iterable[tuple[bytes, float]]
          ) -> Iterable[tuple[bytes, int, int]]:
    """The rule, written the slow way: after each chunk, what the PTY has got, how many
    bytes are held, and how many sequences were dropped so far. The stream is what the
    PTY will get; a byte that completes a sequence takes it out, as far as it is not
    forwarded yet; held is what may still become part of a sequence."""
    prefixes = {p[:i] for p in patterns for i in range(1, len(p))}
    stream, held, dropped, last = bytearray(), 0, 0, -math.inf
    for data, now in chunks:
        if now >= last + HOLD_SECONDS:
            held = 0
        last = now
        for byte in data:
            stream.append(byte)
            ends = [p for p in patterns if stream.endswith(p)]
            if ends:
                cut = min(max(map(len, ends)), held + 1)
                del stream[len(stream) - cut:]
                held -= cut - 1
                dropped += 1
            else:
                held += 1
            held = min(held, max((len(q) for q in prefixes if stream.endswith(q)), default=0))
        yield bytes(stream[: len(stream) - held]), held, dropped


ALPHABET = b"exitquXY/\r\n\x04\x1c.\x03"
extra_sequences = st.lists(st.binary(min_size=1, max_size=4).map(
    lambda b: bytes(ALPHABET[x % len(ALPHABET)] for x in b)), max_size=3)
text = st.lists(st.sampled_from(list(ALPHABET)), max_size=80).map(bytes)
gaps = st.sampled_from([0.0, 0.1, HOLD_SECONDS, 0.7])


@st.composite
def chunked(draw: st.DrawFn, data: bytes) -> list[tuple[bytes, float]]:
    """``data`` cut anywhere, each piece at a time that may or may not pass the hold."""
    points = sorted(draw(st.sets(st.integers(1, max(len(data) - 1, 1)), max_size=len(data))))
    bounds = [0, *(p for p in points if p < len(data)), len(data)]
    now, chunks = 100.0, []
    for start, end in itertools.pairwise(bounds):
        now += draw(gaps)
        chunks.append((data[start:end], now))
    return chunks


@settings(max_examples=400, deadline=None)
@given(extra=extra_sequences, data=st.data())
def test_it_matches_the_model_in_any_chunking_and_timing(extra: list[bytes],
                                                         data: st.DataObject) -> None:
    rules = Rules(extra, ctrl_c_debounce_ms=0)  # \x03 is then an ordinary byte
    stream = data.draw(text)
    # Long enough for the fast scan too: a run of filler at either end.
    stream = data.draw(st.sampled_from([b"", b"." * 40])) + stream + \
        data.draw(st.sampled_from([b"", b"." * 40]))
    chunks = data.draw(chunked(stream))
    flt = InputFilter(rules)
    forwarded, dropped = bytearray(), 0
    patterns = [seq for _, seq in rules.sequences]
    for (piece, now), (expect, held, expect_dropped) in zip(chunks, model(patterns, chunks),
                                                            strict=True):
        out = flt.feed(piece, now)
        forwarded += out.forward
        dropped += sum(b.count for b in out.blocked)
        assert bytes(forwarded) == expect
        assert (flt.deadline() is None) == (held == 0)
        assert dropped == expect_dropped


@settings(max_examples=300, deadline=None)
@given(extra=extra_sequences, data=st.data())
def test_input_without_a_blocked_sequence_comes_out_identical(extra: list[bytes],
                                                              data: st.DataObject) -> None:
    rules = Rules(extra, ctrl_c_debounce_ms=0)
    stream = data.draw(text)
    assume(not any(seq in stream for _, seq in rules.sequences))
    out, blocked = run(InputFilter(rules), data.draw(chunked(stream)))
    assert out == stream
    assert blocked == []


@settings(max_examples=300, deadline=None)
@given(extra=extra_sequences, debounce=st.sampled_from([0, 100, 500]), data=st.data())
def test_a_blocked_sequence_never_reaches_the_pty(extra: list[bytes], debounce: int,
                                                  data: st.DataObject) -> None:
    rules = Rules(extra, ctrl_c_debounce_ms=debounce)
    sequences = [seq for _, seq in rules.sequences]
    stream = data.draw(text) + data.draw(st.sampled_from(sequences)) + data.draw(text)
    out, blocked = run(InputFilter(rules), data.draw(chunked(stream)))
    assert not any(seq in out for seq in sequences)
    assert blocked
