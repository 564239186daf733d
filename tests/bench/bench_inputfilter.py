"""Input filter throughput (not collected by pytest; run it by hand or from `just bench`).

    python tests/bench/bench_inputfilter.py

A 1 MB paste that holds no blocked sequence (English-like text, so the first bytes of
``exit``/``quit`` come often), the same paste stepped byte by byte by the automaton alone
(what the fast scan saves), a 1 MB paste of near misses (``exi``/``qui`` everywhere: the
scan finds no complete sequence), a 1 MB paste with 16k Ctrl+D in it, and 10k keystrokes
fed one per call. Best of 5.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from coop_run.inputfilter import InputFilter, Rules

MB = 1 << 20
WORDS = (b"the quick brown fox jumps over the lazy dog; we expect exceptions to be "
         b"quietly handled, then exited cleanly. ")


def best(run: Callable[[], object], rounds: int = 5) -> float:
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    rules = Rules([b"\x1b[201~rm -rf"])
    text = (WORDS * (MB // len(WORDS) + 1))[:MB]
    near = (b"exi qui /ex " * (MB // 12 + 1))[:MB]
    dense = (b"x" * 63 + b"\x04") * (MB // 64)
    keys = (WORDS * 100)[:10_000]

    def paste(data: bytes) -> Callable[[], object]:
        def run() -> object:
            flt = InputFilter(rules)
            out = flt.feed(data, 0.0).forward + flt.flush_due(1.0).forward
            assert out == data
            return out
        return run

    def blocked() -> None:
        out = InputFilter(rules).feed(dense, 0.0)
        assert len(out.forward) == MB // 64 * 63

    def stepped() -> None:
        flt = InputFilter(rules)
        out = bytearray()
        flt._step(text, 0, len(text), out, {})  # the automaton without the scan
        assert len(out) + len(flt._held) == len(text)

    def typed() -> None:
        flt = InputFilter(rules)
        for i in range(len(keys)):
            flt.feed(keys[i : i + 1], i * 0.1)

    for label, seconds, size in [
        ("1 MB paste, no match (fast scan)", best(paste(text)), MB),
        ("1 MB paste, automaton byte by byte", best(stepped), MB),
        ("1 MB paste of near misses", best(paste(near)), MB),
        ("1 MB paste, a Ctrl+D every 64 bytes", best(blocked), MB),
    ]:
        print(f"{label:38s} {seconds * 1000:8.2f} ms  {size / seconds / MB:8.1f} MB/s")
    seconds = best(typed)
    print(f"{'10k keystrokes, one per feed':38s} {seconds * 1000:8.2f} ms  "
          f"{seconds / len(keys) * 1e6:8.2f} us/feed")


if __name__ == "__main__":
    main()
