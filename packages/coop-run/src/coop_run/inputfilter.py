"""The input filter of web and tunnel clients on the agent PTY (SPEC 7.3); pure, no I/O.

What it guards against: a phone's stray Ctrl+D, or ``exit`` typed into the wrong tab, ending
the agent. Blocked outright: Ctrl+D, Ctrl+\\, ``exit``, ``/exit`` or ``quit`` followed by
``\\r`` or ``\\n``, plus the Coopfile's ``input_filter.block_sequences``. A second Ctrl+C
within ``ctrl_c_debounce_ms`` of one that passed is dropped.

Matching is a streaming Aho-Corasick automaton over the bytes the PTY will receive, so its
state survives chunking (a keystroke per message) and what it drops is taken out of the
stream before matching goes on: ``ex`` Ctrl+D ``it\\r`` is still ``exit\\r``. Bytes that may
be the start of a blocked sequence are held, and forwarded when the match fails or after
``HOLD_SECONDS`` without new input. A flush does not reset the automaton: if the sequence
completes later, what is still unforwarded of it (at least its last byte) is dropped, so a
slow typist cannot get ``exit\\r`` through either; the PTY's input from one filter never
contains a blocked sequence.

The caller owns the clock (``feed(data, now)``, ``flush_due(now)`` at ``deadline()``), one
``InputFilter`` per client connection, and one ``Rules`` per Coopfile shared by all of
them. Which clients and PTYs are filtered is ``applies()``.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

HOLD_SECONDS: Final = 0.5
"""Held bytes go to the PTY after this long without new input."""

DEFAULT_SEQUENCES: Final[tuple[tuple[str, bytes], ...]] = (
    ("ctrl-d", b"\x04"),
    ("ctrl-backslash", b"\x1c"),
    ("exit", b"exit\r"), ("exit", b"exit\n"),
    ("/exit", b"/exit\r"), ("/exit", b"/exit\n"),
    ("quit", b"quit\r"), ("quit", b"quit\n"),
)
"""SPEC 7.3's blocked sequences, each with the name a ``blocked`` event carries."""

CTRL_C: Final = "ctrl-c"

BLOCKED_NOTICE: Final = (
    "\r\n\x1b[1;33m⚠  Blocked from web. Use local terminal to exit.\x1b[0m\r\n").encode()
"""SPEC 7.3's words, written to the client's terminal when a sequence was blocked."""

DEBOUNCED_NOTICE: Final = (
    "\r\n\x1b[1;33m⚠  Ctrl+C dropped: pressed again too soon.\x1b[0m\r\n").encode()
"""Written to the client's terminal when a Ctrl+C fell inside the debounce window."""

FILTERED_CLIENTS: Final = frozenset({"web", "tunnel"})
FILTERED_ROLES: Final = frozenset({"agent"})

Reason = Literal["blocked", "debounced"]


def applies(client_kind: str, pty_role: str) -> bool:
    """Whether input from a client of this kind (``local``, ``web``, ``tunnel``) to a PTY
    of this role (``agent``, ``shell``) goes through the filter: web and tunnel clients on
    the agent only; a local terminal and every shell are never filtered."""
    return client_kind in FILTERED_CLIENTS and pty_role in FILTERED_ROLES


@dataclass(frozen=True, slots=True)
class Blocked:
    """What was kept from the PTY, by name only (never the bytes: a custom sequence is
    named ``block_sequences[i]``), and how many times in one ``Output``."""

    sequence: str
    reason: Reason
    count: int = 1


@dataclass(frozen=True, slots=True)
class Output:
    """The result of one ``feed`` or ``flush_due``: bytes for the PTY, and what was kept
    from it (one entry per sequence and reason, in order of first occurrence)."""

    forward: bytes = b""
    blocked: tuple[Blocked, ...] = ()

    @property
    def notice(self) -> bytes:
        """Terminal text for the client: each notice once, however many were kept."""
        reasons = dict.fromkeys(b.reason for b in self.blocked)
        return b"".join(BLOCKED_NOTICE if r == "blocked" else DEBOUNCED_NOTICE
                        for r in reasons)


_EMPTY: Final = Output()


class Rules:
    """The compiled automaton and settings of one Coopfile's ``[input_filter]``;
    immutable, shared by every client's ``InputFilter``.

    ``extra`` is ``InputFilterTable.blocked_bytes()`` (decoded ``block_sequences``), in
    order. Raises ``ValueError`` on an empty sequence or a negative debounce.
    """

    def __init__(self, extra: Sequence[bytes] = (), *, ctrl_c_debounce_ms: int = 500) -> None:
        if ctrl_c_debounce_ms < 0:
            raise ValueError(f"ctrl_c_debounce_ms must be >= 0, not {ctrl_c_debounce_ms}")
        named = list(DEFAULT_SEQUENCES)
        for i, seq in enumerate(extra):
            if not seq:
                raise ValueError(f"block_sequences[{i}] is empty")
            named.append((f"block_sequences[{i}]", bytes(seq)))
        self.debounce: Final = ctrl_c_debounce_ms / 1000
        self.sequences: Final = tuple(named)
        self.max_len: Final = max(len(seq) for _, seq in named)
        self.rows, self.depth, self.match_len, self.match_name = _compile(named)
        # The fast scan: where the next complete occurrence starts, found in C.
        alternatives = sorted({seq for _, seq in named}, key=len, reverse=True)
        self.search: Final = re.compile(b"|".join(map(re.escape, alternatives))).search


_Tables = tuple[tuple[tuple[int, ...], ...], tuple[int, ...], tuple[int, ...], tuple[str, ...]]


def _compile(named: Sequence[tuple[str, bytes]]) -> _Tables:
    """The automaton as a full transition table (a row of 256 next states per state),
    each state's depth, and the longest sequence ending in it (length 0: none)."""
    goto: list[dict[int, int]] = [{}]
    depth = [0]
    name: list[str | None] = [None]
    for label, seq in named:
        state = 0
        for byte in seq:
            nxt = goto[state].get(byte)
            if nxt is None:
                nxt = len(goto)
                goto[state][byte] = nxt
                goto.append({})
                depth.append(depth[state] + 1)
                name.append(None)
            state = nxt
        if name[state] is None:  # a repeated sequence keeps its first name
            name[state] = label
    # Breadth first, so a state's failure target (shallower) is complete before it.
    rows: list[list[int]] = [[0] * 256 for _ in goto]
    match_len = [0] * len(goto)
    match_name: list[str] = [""] * len(goto)
    fail = [0] * len(goto)
    order: deque[int] = deque()
    for byte, child in goto[0].items():
        rows[0][byte] = child
        order.append(child)
    while order:
        state = order.popleft()
        back = fail[state]
        # The longest blocked sequence ending here: this state's own, else its
        # failure chain's (a shorter sequence that is a suffix of this one).
        if name[state] is not None:
            match_len[state], match_name[state] = depth[state], name[state] or ""
        else:
            match_len[state], match_name[state] = match_len[back], match_name[back]
        row = rows[state]
        row[:] = rows[back]
        for byte, child in goto[state].items():
            row[byte] = child
            fail[child] = rows[back][byte]
            order.append(child)
    return (tuple(tuple(r) for r in rows), tuple(depth), tuple(match_len),
            tuple(match_name))


class InputFilter:
    """One client's filter: feed it what the client sent, write ``forward`` to the PTY
    and the notice or events to the client, and call ``flush_due`` at ``deadline()``.
    When the client goes, drop the filter: what it held (a half-typed ``exi``) never
    reaches the PTY."""

    def __init__(self, rules: Rules) -> None:
        self.rules: Final = rules
        self._state = 0                # the automaton's state after everything fed
        self._held = bytearray()       # fed, not forwarded: the tail a sequence may start
        self._stack: list[int] = []    # the state after each held byte
        self._base = 0                 # the state before the first held byte
        self._last_input = 0.0
        self._ctrl_c_at: float | None = None  # when the last Ctrl+C passed

    def deadline(self) -> float | None:
        """When ``flush_due`` will forward the held bytes; ``None`` when nothing is held."""
        return self._last_input + HOLD_SECONDS if self._held else None

    def flush_due(self, now: float) -> Output:
        """Forward the held bytes if ``HOLD_SECONDS`` passed without input by ``now``."""
        if not self._held or now < self._last_input + HOLD_SECONDS:
            return _EMPTY
        return Output(self._release())

    def feed(self, data: bytes, now: float) -> Output:
        """Filter what a client sent at ``now`` (monotonic seconds); empty ``data`` is no
        input, only a ``flush_due``."""
        if not data:
            return self.flush_due(now)
        out = bytearray()
        hits: dict[tuple[str, Reason], int] = {}
        if self._held and now >= self._last_input + HOLD_SECONDS:
            out += self._release()  # a late timer changes nothing
        self._last_input = now
        if b"\x03" in data and self.rules.debounce:
            data = self._debounce(data, now, hits)
        self._scan(data, out, hits)
        if not hits:
            return Output(bytes(out))
        return Output(bytes(out), tuple(Blocked(name, reason, count)
                                        for (name, reason), count in hits.items()))

    def _release(self) -> bytes:
        held = bytes(self._held)
        self._held.clear()
        self._stack.clear()
        self._base = self._state  # the automaton keeps its place (see the module's doc)
        return held

    def _debounce(self, data: bytes, now: float,
                  hits: dict[tuple[str, Reason], int]) -> bytes:
        parts = data.split(b"\x03")
        kept = bytearray(parts[0])
        for part in parts[1:]:
            if self._ctrl_c_at is None or now >= self._ctrl_c_at + self.rules.debounce:
                self._ctrl_c_at = now
                kept += b"\x03"
            else:
                key: tuple[str, Reason] = (CTRL_C, "debounced")
                hits[key] = hits.get(key, 0) + 1
            kept += part
        return bytes(kept)

    def _scan(self, data: bytes, out: bytearray, hits: dict[tuple[str, Reason], int]) -> None:
        """Skip in C to where a sequence may be; step byte by byte only around it.

        While the automaton is at its root nothing is held, and until the next complete
        occurrence of a sequence (``search``) no byte is dropped; the state at a position
        depends only on the ``max_len - 1`` bytes before it. So everything up to that
        many bytes before the next occurrence (or the end) goes out at once, and the
        automaton restarts from the root there with the same result.
        """
        n = len(data)
        lead = self.rules.max_len - 1
        search = self.rules.search
        i = 0
        if n <= 2 * lead + 1:  # a keystroke: the search would cost more than it saves
            self._step(data, 0, n, out, hits)
            return
        view = memoryview(data)
        while i < n:
            if self._state:
                i = self._step(data, i, i, out, hits)
                continue
            found = search(data, i)
            if found is None:
                start = max(i, n - lead)
                out += view[i:start]
                self._step(data, start, n, out, hits)
                return
            start = max(i, found.start() - lead)
            out += view[i:start]
            i = self._step(data, start, found.end(), out, hits)

    def _step(self, data: bytes, start: int, until: int, out: bytearray,
              hits: dict[tuple[str, Reason], int]) -> int:
        """Run the automaton from ``start`` through ``until`` and on until it is back at
        the root (or the data ends); the index where it stopped."""
        rules = self.rules
        rows, depth, match_len = rules.rows, rules.depth, rules.match_len
        held, stack = self._held, self._stack
        state = self._state
        i = start
        n = len(data)
        while i < n:
            byte = data[i]
            i += 1
            nxt = rows[state][byte]
            length = match_len[nxt]
            if length:
                # Drop what of the sequence is not forwarded yet (this byte and up to
                # length - 1 held ones) and go on as if it had never been typed.
                drop = min(length - 1, len(held))
                if drop:
                    del held[-drop:]
                    del stack[-drop:]
                state = stack[-1] if stack else self._base
                key: tuple[str, Reason] = (rules.match_name[nxt], "blocked")
                hits[key] = hits.get(key, 0) + 1
            else:
                held.append(byte)
                stack.append(nxt)
                state = nxt
                excess = len(held) - depth[nxt]
                if excess > 0:  # too far back to be part of any sequence
                    out += held[:excess]
                    self._base = stack[excess - 1]
                    del held[:excess]
                    del stack[:excess]
            if not state and i >= until:
                break
        self._state = state
        return i
