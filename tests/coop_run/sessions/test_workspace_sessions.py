"""Several sessions in one workspace (two agents on one repository): ``coop -n NAME``
starts another; bare ``coop`` and commands without a SESSION take the most recent; kill
and restart want a name when there is a choice. Real CLI, daemon and supervisors."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from coop_cli import COOP
from local_terminal import terminal
from session_support import Coop, ls_json, write_coopfile

from coop_run.daemon.registry import most_recent
from coop_run.daemon.supervisors import Session
from support.procs import pid_alive

pytestmark = pytest.mark.asuser


def test_most_recent_is_the_last_created() -> None:
    def session(name: str, created: int | None, start: int | None) -> Session:
        return Session(name=name, workspace="/w", pid=1, start=start,
                       socket_path=Path("/s"), created=created)

    a, b, c = session("a", 100, 5), session("b", 101, 1), session("c", 101, 3)
    assert most_recent([a, b, c]) is c  # same second: the later start
    assert most_recent([c, b, a]) is c
    d = session("d", 101, 3)
    assert most_recent([c, d]) is d and most_recent([d, c]) is c  # equals: the later
    assert most_recent([session("x", None, None), a]) is a
    assert most_recent([]) is None


def _in_session(coop: Coop, cwd: Path, *args: str) -> str:
    """``coop shell [SESSION] -c CMD``'s output (the sandbox's PTY ends lines with CR LF)."""
    res = coop("shell", *args, cwd=cwd)
    assert res.returncode == 0, res
    return res.stdout.replace("\r\n", "\n")


def test_a_new_name_starts_a_second_session_in_the_workspace(coop: Coop,
                                                             host_workspace: Path) -> None:
    assert coop("-d", cwd=host_workspace).stdout == "session proj created\n"
    second = coop("-d", "-n", "second", cwd=host_workspace)
    assert (second.returncode, second.stdout) == (0, "session second created\n"), second
    for args, name in ((("-n", "second"), "second"), (("-n", "proj"), "proj"), ((), "second")):
        again = coop("-d", *args, cwd=host_workspace)
        assert again.stdout == f"session {name} already running\n", (args, again)
    listing = ls_json(coop, host_workspace)
    assert sorted((s["name"], s["workspace"]) for s in listing) == [
        ("proj", str(host_workspace)), ("second", str(host_workspace))]
    assert listing[0]["pid"] != listing[1]["pid"]
    # Two sandboxes, each with its own session directory, on the one workspace.
    assert {p.name for p in (coop.coop_home / "sessions").iterdir()} == {"proj", "second"}
    assert _in_session(coop, host_workspace, "proj", "-c", "echo $COOP_SESSION") == "proj\n"
    _in_session(coop, host_workspace, "second", "-c", "echo shared > /workspace/note")
    assert (host_workspace / "note").read_text() == "shared\n"
    assert _in_session(coop, host_workspace, "proj", "-c", "cat /workspace/note") == "shared\n"
    # Without a SESSION: the workspace's most recent session.
    assert _in_session(coop, host_workspace, "-c", "echo $COOP_SESSION") == "second\n"


def test_bare_coop_attaches_to_the_most_recent_session(coop: Coop,
                                                       host_workspace: Path) -> None:
    assert coop("-d", cwd=host_workspace).returncode == 0
    assert coop("-d", "-n", "later", cwd=host_workspace).returncode == 0
    with terminal(coop, [], host_workspace, wrapped=True) as term:
        term.type(b"echo in-$COOP_SESSION-$((6*7))\r")
        term.read_until(b"in-later-42\r\n")
        term.type(b"\x1d")
        term.read_until(b"[detached from session later]")
        term.read_until(b"RC=0")
        assert term.exit_status() == 0
    assert sorted(s["name"] for s in ls_json(coop, host_workspace)) == ["later", "proj"]


def test_kill_and_restart_want_a_name_when_the_workspace_has_several(
        coop: Coop, host_workspace: Path) -> None:
    assert coop("-d", cwd=host_workspace).returncode == 0
    assert coop("-d", "-n", "second", cwd=host_workspace).returncode == 0
    pids = {s["name"]: s["pid"] for s in ls_json(coop, host_workspace)}
    for command in ("kill", "restart"):
        res = coop(command, cwd=host_workspace)
        assert (res.returncode, res.stdout) == (1, ""), (command, res)
        assert res.stderr == ("error: ~/proj has 2 sessions (proj, second): "
                              "name the one you mean\n"), (command, res)
    assert all(pid_alive(pid) for pid in pids.values())
    killed = coop("kill", "second", cwd=host_workspace)
    assert killed.stdout == "killed session second\n", killed
    # One left: it is the workspace's session again, for every command.
    assert coop("-d", cwd=host_workspace).stdout == "session proj already running\n"
    assert coop("kill", cwd=host_workspace).stdout == "killed session proj\n"
    assert ls_json(coop, host_workspace) == []


def test_a_name_of_another_workspace_is_refused(coop: Coop, host_workspace: Path) -> None:
    other = coop.home / "other"
    write_coopfile(other, "host")
    assert coop("init", cwd=other).returncode == 0
    assert coop("-d", "-n", "taken", cwd=other).stdout == "session taken created\n"
    res = coop("-d", "-n", "taken", cwd=host_workspace)
    assert res.returncode == 1, res
    assert res.stderr == "error: session 'taken' already exists for ~/other\n", res
    assert [s["name"] for s in ls_json(coop, host_workspace)] == ["taken"]


def test_concurrent_bare_coops_share_one_session(coop: Coop, host_workspace: Path) -> None:
    """Creates in one workspace take turns: the second finds the first's session."""
    procs = [subprocess.Popen([str(COOP), "-d"], cwd=host_workspace, env=coop.env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              stdin=subprocess.DEVNULL) for _ in range(3)]
    outcomes = [(p.wait(timeout=60), *p.communicate()) for p in procs]
    assert sorted(outcomes) == [(0, "session proj already running\n", ""),
                                (0, "session proj already running\n", ""),
                                (0, "session proj created\n", "")], outcomes
    assert [s["name"] for s in ls_json(coop, host_workspace)] == ["proj"]
