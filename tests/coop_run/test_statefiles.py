"""Runtime state files: whole or absent, private, and no temporary left behind."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from coop_run.statefiles import write_json_atomic, write_text_atomic


def test_a_state_file_is_replaced_whole_and_private(tmp_path: Path) -> None:
    tmp_path = tmp_path / "dir"
    tmp_path.mkdir()
    path = tmp_path / "state.json"
    write_json_atomic(path, {"pid": 1})
    write_json_atomic(path, {"pid": 2, "name": "x"})
    assert json.loads(path.read_text()) == {"pid": 2, "name": "x"}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    tmp_path = tmp_path / "dir"
    tmp_path.mkdir()
    path = tmp_path / "daemon.pid"
    write_text_atomic(path, "1\n")
    with pytest.raises(TypeError):
        write_json_atomic(path, {"not": object()})  # fails inside json.dumps, before any file
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "keep").write_text("")
    with pytest.raises(OSError):
        write_text_atomic(tmp_path / "sub", "x")  # the rename onto a full directory fails
    assert path.read_text() == "1\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["daemon.pid", "sub"]
