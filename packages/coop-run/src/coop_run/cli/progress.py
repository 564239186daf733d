"""Rendering build progress events for a terminal or a log.

On a TTY the pull shows one updating line per layer and a running step shows a pending
``[i/N]`` line that is completed in place; elsewhere (CI logs, pipes, tests) every line is
printed once, when there is something final to say. Formatting is pure and separate from
the writer so it can be tested without a terminal.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TextIO

from coop_build.progress import (
    LayerProgress,
    Message,
    ProgressEvent,
    StepFinished,
    StepOutput,
    StepStarted,
)

# Redraw the live layer block at most this often (seconds); completions always redraw.
REDRAW_INTERVAL = 0.1
_CLEAR_LINE = "\r\x1b[2K"


def format_bytes(count: float) -> str:
    """Human size with one decimal, in powers of 1000 like registries and browsers show."""
    value = float(count)
    for unit in ("B", "kB", "MB", "GB"):
        if abs(value) < 1000 or unit == "GB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")  # pragma: no cover


def format_duration(seconds: float) -> str:
    """``0.31s``, ``12.4s``, ``3m 05s``: precise for short steps, readable for long ones."""
    if seconds < 10:
        return f"{seconds:.2f}s"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def format_age(seconds: float) -> str:
    """How long ago, in the largest whole unit: ``2d ago``, ``5m ago``, ``just now``."""
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit} ago"
    return "just now"


def short_digest(digest: str) -> str:
    """The first 12 hex digits of ``sha256:<hex>``, as docker and podman print them."""
    return digest.split(":", 1)[-1][:12]


def format_layer(event: LayerProgress) -> str:
    """One layer's line: digest, bytes done/total, rate or ``cached``/``done``."""
    name = short_digest(event.digest)
    if event.cached:
        return f"  {name}  {format_bytes(event.total)}  cached"
    amount = f"{format_bytes(event.done)} / {format_bytes(event.total)}"
    rate = f"{format_bytes(event.rate)}/s"
    if event.total and event.done >= event.total:
        return f"  {name}  {amount}  {rate}  done"
    return f"  {name}  {amount}  {rate}"


def format_step_start(event: StepStarted) -> str:
    return f"[{event.index}/{event.total}] {event.description}"


def format_step_finish(event: StepFinished) -> str:
    """``[i/N] description  1.20s`` or ``[i/N] description  cached``."""
    status = "cached" if event.cached else format_duration(event.elapsed)
    return f"[{event.index}/{event.total}] {event.description}  {status}"


def _layer_finished(event: LayerProgress) -> bool:
    return event.cached or (event.total > 0 and event.done >= event.total)


class ProgressRenderer:
    """A ``ProgressCallback`` that writes events to ``out``.

    ``tty`` selects updating lines (ANSI cursor movement) over plain lines; ``verbose``
    streams every line of step output, indented under its step.
    """

    def __init__(
        self,
        out: TextIO,
        *,
        tty: bool,
        verbose: bool = False,
        width: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._out = out
        self._width = width  # TTY columns: updating lines must not wrap
        self._tty = tty
        self._verbose = verbose
        self._clock = clock
        self._layers: dict[str, LayerProgress] = {}  # the live block, in arrival order
        self._drawn = 0  # lines of the live block currently on screen
        self._last_draw = float("-inf")
        self._printed_layers: set[str] = set()  # plain mode: each layer reported once
        self._pending_step: str | None = None  # TTY: "[i/N] ..." written without newline

    def __call__(self, event: ProgressEvent) -> None:
        if isinstance(event, LayerProgress):
            self._layer(event)
        elif isinstance(event, StepStarted):
            self._step_started(event)
        elif isinstance(event, StepOutput):
            if self._verbose:
                self._line(f"    {event.line}")
        elif isinstance(event, StepFinished):
            self._step_finished(event)
        elif isinstance(event, Message):
            self._line(event.text)
        self._out.flush()

    def close(self) -> None:
        """Leave the terminal on a fresh line (after success, failure or Ctrl+C)."""
        self._freeze_layers()
        if self._pending_step is not None:
            self._out.write("\n")
            self._pending_step = None
        self._out.flush()

    def _line(self, text: str) -> None:
        """Write a permanent line below everything live."""
        self._freeze_layers()
        if self._pending_step is not None:
            self._out.write("\n")
            self._pending_step = None
        self._out.write(text + "\n")

    def _layer(self, event: LayerProgress) -> None:
        if not self._tty:
            if _layer_finished(event) and event.digest not in self._printed_layers:
                self._printed_layers.add(event.digest)
                self._line(format_layer(event))
            return
        if self._pending_step is not None:
            self._out.write("\n")
            self._pending_step = None
        self._layers[event.digest] = event
        now = self._clock()
        if _layer_finished(event) or now - self._last_draw >= REDRAW_INTERVAL:
            self._draw_layers()
            self._last_draw = now

    def _fit(self, text: str) -> str:
        """Cut a line that would wrap: ``\\r`` can only rewrite the last screen line."""
        if self._width is None or len(text) < self._width:
            return text
        return text[: max(self._width - 2, 1)] + "…"

    def _draw_layers(self) -> None:
        if self._drawn:
            self._out.write(f"\x1b[{self._drawn}A")
        for event in self._layers.values():
            self._out.write(_CLEAR_LINE + format_layer(event) + "\n")
        self._drawn = len(self._layers)

    def _freeze_layers(self) -> None:
        """Draw the live block a last time and stop updating it."""
        if self._layers:
            self._draw_layers()
        self._layers.clear()
        self._drawn = 0

    def _step_started(self, event: StepStarted) -> None:
        text = format_step_start(event)
        if self._verbose or not self._tty:
            if self._verbose:
                self._line(text)
            return
        self._line_break_for_pending()
        self._freeze_layers()
        self._out.write(self._fit(text + " ..."))
        self._pending_step = text

    def _line_break_for_pending(self) -> None:
        if self._pending_step is not None:
            self._out.write("\n")
            self._pending_step = None

    def _step_finished(self, event: StepFinished) -> None:
        text = format_step_finish(event)
        started = f"[{event.index}/{event.total}] {event.description}"
        if self._tty and self._pending_step == started and not self._layers:
            self._out.write(_CLEAR_LINE + self._fit(text) + "\n")
            self._pending_step = None
            return
        self._line(text)
