"""Resolving mount targets inside a root that is not ``/`` yet."""

from __future__ import annotations

from pathlib import Path

import pytest

from coop_build.rootpath import resolve_in_root


def test_links_are_followed_within_the_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "real").mkdir()
    (root / "etc" / "abs").symlink_to("/run/x")  # absolute: restarts at root
    (root / "etc" / "rel").symlink_to("../../../run/y")  # '..' stops at root
    (root / "abs").symlink_to("/real")
    (root / "up").symlink_to("../../../../etc")
    assert resolve_in_root(str(root), "etc/abs") == "run/x"
    assert resolve_in_root(str(root), "/etc/rel") == "run/y"
    assert resolve_in_root(str(root), "/abs/x") == "real/x"
    assert resolve_in_root(str(root), "/up/passwd") == "etc/passwd"


def test_missing_parts_and_dots(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    assert resolve_in_root(str(root), "etc/missing/file") == "etc/missing/file"
    assert resolve_in_root(str(root), "/a/./b/../c") == "a/c"
    assert resolve_in_root(str(root), "/") == ""


def test_loops_are_refused(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "loop").symlink_to("loop")
    with pytest.raises(OSError, match="too many symlinks resolving /loop/x"):
        resolve_in_root(str(root), "loop/x")
