"""Rendering progress events: plain lines for logs, updating lines for terminals."""

from __future__ import annotations

import io

from coop_build.progress import LayerProgress, Message, StepFinished, StepOutput, StepStarted
from coop_run.cli.progress import (
    ProgressRenderer,
    format_age,
    format_bytes,
    format_duration,
    format_layer,
    short_digest,
)

DIGEST = "sha256:" + "ab" * 32
OTHER = "sha256:" + "cd" * 32


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_formatters() -> None:
    assert format_bytes(0) == "0 B"
    assert format_bytes(999) == "999 B"
    assert format_bytes(1500) == "1.5 kB"
    assert format_bytes(51_200_000) == "51.2 MB"
    assert format_bytes(3_000_000_000_000) == "3000.0 GB"
    assert format_duration(0.314) == "0.31s"
    assert format_duration(12.44) == "12.4s"
    assert format_duration(185) == "3m 05s"
    assert format_duration(7260) == "2h 01m"
    assert format_age(0.4) == "just now"
    assert format_age(-5) == "just now"
    assert format_age(59) == "59s ago"
    assert format_age(2 * 86400 + 7200) == "2d ago"
    assert format_age(3 * 3600 + 5) == "3h ago"
    assert short_digest(DIGEST) == "ab" * 6
    assert format_layer(LayerProgress(DIGEST, 500, 1000, 250.0)) == (
        f"  {'ab' * 6}  500 B / 1.0 kB  250 B/s"
    )
    assert format_layer(LayerProgress(DIGEST, 1000, 1000, 2000.0)).endswith("2.0 kB/s  done")
    assert format_layer(LayerProgress(DIGEST, 0, 1000, 0.0, cached=True)) == (
        f"  {'ab' * 6}  1.0 kB  cached"
    )


def test_plain_mode_prints_each_final_line_once() -> None:
    out = io.StringIO()
    render = ProgressRenderer(out, tty=False)
    render(StepStarted(1, 2, "pull busybox"))
    render(LayerProgress(DIGEST, 10, 100, 5.0))
    render(LayerProgress(DIGEST, 100, 100, 5.0))
    render(LayerProgress(DIGEST, 100, 100, 5.0))
    render(LayerProgress(OTHER, 0, 7, 0.0, cached=True))
    render(StepFinished(1, 2, "pull busybox", 0.5, cached=False))
    render(StepStarted(2, 2, "make"))
    render(StepOutput(2, "compiling"))
    render(StepFinished(2, 2, "make", 0.0, cached=True))
    render(Message("using prebuilt image"))
    render.close()
    assert out.getvalue().splitlines() == [
        f"  {'ab' * 6}  100 B / 100 B  5 B/s  done",
        f"  {'cd' * 6}  7 B  cached",
        "[1/2] pull busybox  0.50s",
        "[2/2] make  cached",
        "using prebuilt image",
    ]
    assert "\x1b" not in out.getvalue()


def test_verbose_mode_streams_output_under_its_step() -> None:
    out = io.StringIO()
    render = ProgressRenderer(out, tty=False, verbose=True)
    render(StepStarted(1, 1, "make"))
    render(StepOutput(1, "cc -o x x.c"))
    render(StepFinished(1, 1, "make", 1.0, cached=False))
    assert out.getvalue().splitlines() == ["[1/1] make", "    cc -o x x.c", "[1/1] make  1.00s"]


def test_tty_step_line_is_completed_in_place() -> None:
    out = io.StringIO()
    render = ProgressRenderer(out, tty=True)
    render(StepStarted(1, 1, "make"))
    assert out.getvalue() == "[1/1] make ..."
    render(StepFinished(1, 1, "make", 2.0, cached=False))
    assert out.getvalue() == "[1/1] make ...\r\x1b[2K[1/1] make  2.00s\n"


def test_tty_layers_update_in_place_and_are_throttled() -> None:
    out = io.StringIO()
    clock = FakeClock()
    render = ProgressRenderer(out, tty=True, clock=clock)
    render(StepStarted(1, 2, "pull img"))
    render(LayerProgress(DIGEST, 10, 100, 1.0))
    render(LayerProgress(OTHER, 5, 50, 1.0))  # same instant: not redrawn yet
    first = out.getvalue()
    layer = format_layer(LayerProgress(DIGEST, 10, 100, 1.0))
    assert first == f"[1/2] pull img ...\n\r\x1b[2K{layer}\n"
    clock.now = 1.0
    render(LayerProgress(DIGEST, 60, 100, 50.0))
    redraw = out.getvalue()[len(first):]
    # Cursor up over the one line drawn, then both layers redrawn.
    assert redraw.startswith("\x1b[1A\r\x1b[2K")
    assert redraw.count("\r\x1b[2K") == 2
    render(LayerProgress(OTHER, 50, 50, 5.0))  # completion always redraws
    assert out.getvalue().endswith("done\n")
    render(StepFinished(1, 2, "pull img", 1.0, cached=False))
    assert out.getvalue().endswith("[1/2] pull img  1.00s\n")
    render.close()


def test_tty_lines_are_cut_to_the_terminal_width() -> None:
    out = io.StringIO()
    render = ProgressRenderer(out, tty=True, width=20)
    render(StepStarted(1, 1, "a very long command indeed"))
    assert out.getvalue() == "[1/1] a very long …"
    render(StepFinished(1, 1, "a very long command indeed", 1.0, cached=False))
    assert out.getvalue().endswith("\r\x1b[2K[1/1] a very long …\n")
