"""Progress events a build emits; the CLI renders them, CI scripts may log them.

Library code never prints: it calls the ``ProgressCallback`` it was given.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class LayerProgress:
    """Bytes of one blob downloaded so far (``total`` from the manifest descriptor)."""

    digest: str
    done: int
    total: int
    rate: float  # bytes per second since this blob started
    cached: bool = False  # already in the local cache: nothing downloaded


@dataclass(frozen=True)
class StepStarted:
    index: int  # 1-based
    total: int
    description: str


@dataclass(frozen=True)
class StepOutput:
    """One line of a running step's output (without the newline)."""

    index: int
    line: str


@dataclass(frozen=True)
class StepFinished:
    index: int
    total: int
    description: str
    elapsed: float
    cached: bool


@dataclass(frozen=True)
class Message:
    """A free-form informational line (e.g. "using prebuilt image ...")."""

    text: str


ProgressEvent = LayerProgress | StepStarted | StepOutput | StepFinished | Message
ProgressCallback = Callable[[ProgressEvent], None]


def ignore_progress(event: ProgressEvent) -> None:
    """The default callback: drop every event."""
