"""The umoci runner: real umoci for success and failure, an empty PATH for 'missing'."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from coop_build.errors import ToolError
from coop_build.umoci import MISSING, error_line, run_umoci
from support.require import needs

needs_umoci = needs(shutil.which("umoci") is not None, "umoci not installed")


def test_error_line_prefers_umoci_errors() -> None:
    stderr = "   • unpacking rootfs ...\n   ⨯ tag is not found: nope\n"
    assert error_line(stderr, 1) == "tag is not found: nope"
    assert error_line("something odd\nlast words\n", 1) == "last words"
    assert error_line("", 2) == "exit 2"


@needs_umoci
def test_runs_umoci(tmp_path: Path) -> None:
    assert "umoci version" in run_umoci(["--version"])
    run_umoci(["init", "--layout", tmp_path / "layout"])
    assert (tmp_path / "layout" / "index.json").is_file()


@needs_umoci
def test_failure_carries_umoci_stderr(tmp_path: Path) -> None:
    run_umoci(["init", "--layout", tmp_path / "layout"])
    with pytest.raises(ToolError) as info:
        run_umoci(["raw", "unpack", "--rootless", "--image", f"{tmp_path / 'layout'}:nope",
                   tmp_path / "out"])
    assert str(info.value) == "umoci raw unpack failed: tag is not found: nope"
    assert info.value.tool == "umoci"
    assert "tag is not found" in info.value.stderr


def test_missing_umoci(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ToolError, match=r"^umoci is not installed \(apt-get install umoci\)$"):
        run_umoci(["--version"])
    assert MISSING == "umoci is not installed (apt-get install umoci)"
