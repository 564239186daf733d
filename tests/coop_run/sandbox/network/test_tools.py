"""The network tools are found by absolute path, also from a user's PATH without sbin."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from coop_run.sandbox.network._tools import in_netns, tool_path


def test_tools_in_sbin_are_found_without_sbin_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/usr/local/bin:/usr/bin:/bin")  # Debian's default for users
    for tool in ("nft", "ip"):
        path = Path(tool_path(tool))
        assert path.is_absolute() and path.name == tool and os.access(path, os.X_OK)


def test_a_tool_run_in_a_netns_is_named_by_its_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/usr/local/bin:/usr/bin:/bin")
    argv = in_netns(4242, ["nft", "-f", "-"])
    assert argv[:3] == ["nsenter", "--target=4242", "--net"]
    tool = argv.index(tool_path("nft"))
    assert Path(argv[tool]).is_absolute() and argv[tool + 1:] == ["-f", "-"]
    assert ("--user" in argv) == (os.geteuid() != 0)
