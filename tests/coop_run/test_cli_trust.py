"""``coop trust [FILE] [-w DIR] [--revoke]`` through the real console script (no daemon:
trusting is a file under ``COOP_HOME``). What a create does with the trust is in
``tests/coop_run/sessions/test_escape_coopfile.py``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from coop_cli import RunCoop

AGENT = '[agent]\ncommand = "sh"\n'
HOST = AGENT + '[network]\nmode = "host"\n'
HOST_LINE = ('  [network].mode = "host": shares the host\'s network (its addresses, its loopback '
             "services and its abstract Unix sockets)")


def store(coop_env: Any) -> dict[str, Any]:
    path = Path(coop_env.coop_home) / "trust.json"
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def test_trust_prints_what_it_asks_and_records_those_bytes(
        run_coop: RunCoop, workspace: Path, coop_env: Any) -> None:
    (workspace / "coop.toml").write_text(HOST + '[env]\nT = "$AWS_KEY"\n')
    result = run_coop("trust")
    assert (result.returncode, result.stderr) == (0, ""), result
    assert result.stdout == (
        "./coop.toml asks for more than coop's defaults:\n"
        f"{HOST_LINE}\n"
        '  [env].T = "$AWS_KEY": passes $AWS_KEY from your environment into the session\n'
        "Trusted ./coop.toml (until it changes)\n")
    entry = store(coop_env)["files"][str(workspace.resolve() / "coop.toml")]
    assert entry["sha256"] == hashlib.sha256((workspace / "coop.toml").read_bytes()).hexdigest()
    assert entry["grants"] == ["env AWS_KEY", "network host"]


def test_a_file_asking_nothing_is_said_so_and_not_recorded(
        run_coop: RunCoop, workspace: Path, coop_env: Any) -> None:
    (workspace / "coop.toml").write_text(AGENT + '[workspace]\nmount = "sub/.."\n'
                                         '[env]\nPLAIN = "literal $NOT"\n')
    result = run_coop("trust")
    assert (result.returncode, result.stderr) == (0, ""), result
    assert result.stdout == ("./coop.toml asks for nothing beyond coop's defaults: "
                             "nothing to trust\n")
    assert not (Path(coop_env.coop_home) / "trust.json").exists()


def test_what_the_global_layer_gives_is_not_asked(run_coop: RunCoop, workspace: Path,
                                                  tmp_path: Path) -> None:
    (workspace / "coop.toml").write_text(HOST)
    (tmp_path / "mine.toml").write_text('[network]\nmode = "host"\n')
    result = run_coop("--config", str(tmp_path / "mine.toml"), "trust")
    assert result.stdout.endswith("nothing to trust\n"), result


def test_w_names_the_workspace_and_file_any_path(run_coop: RunCoop, workspace: Path,
                                                 coop_env: Any) -> None:
    (workspace / "coop.toml").write_text(HOST)
    result = run_coop("trust", "-w", "ws", cwd=workspace.parent)
    assert result.stdout.splitlines()[-1] == "Trusted ./ws/coop.toml (until it changes)", result
    other = workspace / "sub"
    other.mkdir()
    (other / "coop.toml").write_text(HOST)
    assert run_coop("trust", "sub/coop.toml").returncode == 0
    assert sorted(store(coop_env)["files"]) == [str(workspace.resolve() / "coop.toml"),
                                                str(other.resolve() / "coop.toml")]
    both = run_coop("trust", "-w", ".", "coop.toml")
    assert both.returncode == 2 and "give FILE or -w, not both" in both.stderr, both


def test_revoke(run_coop: RunCoop, workspace: Path, coop_env: Any) -> None:
    (workspace / "coop.toml").write_text(HOST)
    assert run_coop("trust").returncode == 0
    first = run_coop("trust", "--revoke")
    assert (first.returncode, first.stdout) == (0, "./coop.toml: trust revoked\n"), first
    assert store(coop_env)["files"] == {}
    again = run_coop("trust", "--revoke")
    assert (again.returncode, again.stdout) == (0, "./coop.toml was not trusted\n"), again


def test_quiet_records_without_a_word(run_coop: RunCoop, workspace: Path,
                                      coop_env: Any) -> None:
    (workspace / "coop.toml").write_text(HOST)
    result = run_coop("-q", "trust")
    assert (result.returncode, result.stdout, result.stderr) == (0, "", ""), result
    assert len(store(coop_env)["files"]) == 1


@pytest.mark.parametrize(("args", "content", "line"), [
    ((), None, "error: ./coop.toml: file not found"),
    (("other.toml",), None, "error: ./other.toml: file not found"),
    ((), "[network\n", "error: ./coop.toml:1:9: invalid TOML: "),
    ((), '[network]\nmode = "bridge"\n', "error: ./coop.toml: [network].mode: must be one of"),
    ((), AGENT + '[workspace]\nmount = "/etc"\n',
     "error: ./coop.toml: [workspace].mount = '/etc': /etc is the host's own and is never "
     "bound into a session"),
])
def test_a_missing_or_invalid_file_is_one_line_and_exit_2(
        run_coop: RunCoop, workspace: Path, coop_env: Any, args: tuple[str, ...],
        content: str | None, line: str) -> None:
    if content is not None:
        (workspace / "coop.toml").write_text(content)
    result = run_coop("trust", *args)
    assert (result.returncode, result.stdout) == (2, ""), result
    assert result.stderr.count("\n") == 1 and result.stderr.startswith(line), result
    assert not (Path(coop_env.coop_home) / "trust.json").exists()
