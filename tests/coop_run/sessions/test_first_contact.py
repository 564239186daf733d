"""A newcomer's first minutes with the real ``coop``, daemon and sandbox: a directory
without a Coopfile, then ``coop init --example quickstart`` and ``coop`` to a working agent.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from coop_cli import complete
from session_support import Coop, ls_json, write_coopfile
from supervisor_client import Stream

pytestmark = pytest.mark.asuser

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
NAMES = "aider, ci-prebuild, claude, codex, node, python, quickstart"
HINT = f"start from an example: coop init --example NAME ({NAMES})"


def test_bare_coop_without_a_coopfile_points_to_the_examples(coop: Coop) -> None:
    fresh = coop.home / "fresh"
    fresh.mkdir()
    res = coop("-d", cwd=fresh)
    assert (res.returncode, res.stdout) == (2, ""), res
    assert res.stderr == f"error: no ./coop.toml here; {HINT}\n", res
    res = coop("-d", "-w", str(fresh), cwd=coop.home)  # named as typed from where it ran
    assert res.returncode == 2, res
    hint = HINT.replace("coop init", "coop init -w ./fresh")
    assert res.stderr == f"error: no ./fresh/coop.toml; {hint}\n", res
    assert ls_json(coop, fresh) == []


def test_bare_coop_attaches_even_when_the_coopfile_is_gone(coop: Coop,
                                                           host_workspace: Path) -> None:
    assert coop("-d", cwd=host_workspace).stdout == "session proj created\n"
    (host_workspace / "coop.toml").unlink()
    again = coop("-d", cwd=host_workspace)
    assert (again.returncode, again.stdout) == (0, "session proj already running\n"), again


def test_init_example_quickstart_then_coop_runs_its_agent(coop: Coop) -> None:
    fresh = coop.home / "fresh"
    fresh.mkdir()
    init = coop("init", "--example", "quickstart", cwd=fresh)
    assert init.returncode == 0, init
    assert init.stdout.startswith("Wrote ./coop.toml, ./agent.sh from the quickstart example\n")
    assert (fresh / "agent.sh").read_bytes() == (EXAMPLES / "quickstart" / "agent.sh").read_bytes()
    created = coop("-d", cwd=fresh)
    assert created.stdout == "session fresh created\n", created
    # The agent is the example's script, in the workspace, on the rootfs the example built.
    agent = Stream.open(coop.coop_home / "sessions" / "fresh" / "supervisor.sock", "attach")
    try:
        agent.wait_output(b"motd: built by coop init")
        agent.wait_output(b"hello from the quickstart")
        agent.type(b"first contact\r")
        agent.wait_output(b"you said: first contact")
    finally:
        agent.close()


def _complete(coop: Coop, words: str) -> list[str]:
    return complete(coop.env, "bash_complete", words, str(len(words.split(" ")) - 1))


def test_tab_completes_the_running_sessions_and_never_starts_a_daemon(
        coop: Coop, host_workspace: Path) -> None:
    assert coop("-d", cwd=host_workspace).returncode == 0
    assert coop("-d", "-n", "other", cwd=host_workspace).returncode == 0
    assert _complete(coop, "coop attach ") == ["plain,other", "plain,proj"]
    assert _complete(coop, "coop kill p") == ["plain,proj"]
    assert _complete(coop, "coop restart x") == []
    assert coop("shutdown", cwd=host_workspace).returncode == 0
    assert _complete(coop, "coop shell ") == []
    assert "Daemon:     not running" in coop("status", cwd=host_workspace).stdout


def test_a_session_in_the_home_directory_is_warned_about_once(coop: Coop) -> None:
    """The agent sees everything in the home: said when the session is created, not on
    every later command that finds it."""
    write_coopfile(coop.home, "host")
    assert coop("init", cwd=coop.home).returncode == 0
    first = coop("-d", cwd=coop.home)
    assert first.returncode == 0, first
    assert "warning: the workspace is your home directory" in first.stderr
    again = coop("-d", cwd=coop.home)
    assert again.returncode == 0 and "already running" in again.stdout
    assert "home directory" not in again.stderr
    elsewhere = coop.home / "proj"
    write_coopfile(elsewhere, "host")
    assert coop("init", cwd=elsewhere).returncode == 0
    other = coop("-d", cwd=elsewhere)
    assert other.returncode == 0 and "home directory" not in other.stderr


def test_a_coopfile_cannot_mount_the_hosts_own_directories(coop: Coop) -> None:
    """``[workspace] mount = "/etc"`` (a cloned repository's Coopfile) got the host's /etc
    bound read-write: refused outright, one line, exit 2, and no session."""
    workspace = coop.home / "proj"
    write_coopfile(workspace, "host")
    assert coop("init", cwd=workspace).returncode == 0
    with (workspace / "coop.toml").open("a") as coopfile:
        coopfile.write('\n[workspace]\nmount = "/etc"\n')
    result = coop("-d", cwd=workspace)
    assert result.returncode == 2, result
    assert result.stderr.count("\n") == 1, result.stderr
    assert "/etc is the host's own and is never bound into a session" in result.stderr
    assert ls_json(coop, workspace) == []
