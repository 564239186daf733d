"""Session directories: names, bind-source safety, state records and stale reaping."""

from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path

import pytest

from coop_build.idmap import IdMap
from coop_build.paths import CoopPaths
from coop_run.errors import BindPathError, SandboxError
from coop_run.layout import SessionDir, check_session_name, refused_mount
from coop_run.procs import proc_start_time
from coop_run.sandbox.sessiondirs import (
    check_bind_source,
    claimed,
    clean_transient,
    persist_name_ok,
    reap_stale,
    state_owner_alive,
)
from coop_run.statefiles import read_json, write_json_atomic
from support.procs import wait_for


@pytest.mark.parametrize("name", ["proj", "my-proj_2", "a.b", "x" * 63])
def test_good_names(name: str) -> None:
    check_session_name(name)


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "-x", "x" * 64, "ü", "a b"])
def test_bad_names(name: str) -> None:
    with pytest.raises(SandboxError, match="invalid session name"):
        check_session_name(name)


def test_persist_names() -> None:
    assert persist_name_ok(".cache")
    assert persist_name_ok(".config/claude")
    for bad in ("", "/etc", "../x", "a/../b", "a//b", "./a"):
        assert not persist_name_ok(bad), bad


def test_bind_source_inside_home_or_workspace(tmp_path: Path) -> None:
    home = tmp_path / "home"
    ws = tmp_path / "ws"
    (home / "data").mkdir(parents=True)
    ws.mkdir()
    assert check_bind_source(home / "data", home=home, workspace=ws) == (home / "data").resolve()
    assert check_bind_source(ws, home=home, workspace=ws) == ws.resolve()
    (home / "inner").symlink_to(ws)  # a link between the two allowed places is fine
    assert check_bind_source(home / "inner", home=home, workspace=ws) == ws.resolve()


def test_symlink_pointing_out_is_refused_in_one_line(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    (home / "sneaky").symlink_to("/etc")
    with pytest.raises(BindPathError) as info:
        check_bind_source(home / "sneaky", home=home, workspace=tmp_path / "ws")
    message = str(info.value)
    assert "\n" not in message
    assert "sneaky" in message and "/etc" in message and "outside your home" in message
    assert info.value.code == "BIND_PATH_REFUSED"
    with pytest.raises(BindPathError, match="does not exist"):
        check_bind_source(home / "missing", home=home, workspace=home)


def test_state_owner_alive(tmp_path: Path) -> None:
    me = {"pid": os.getpid(), "start": proc_start_time(os.getpid())}
    assert state_owner_alive({"creator": me})
    assert not state_owner_alive({"creator": {**me, "start": (me["start"] or 0) + 1}})
    assert not state_owner_alive({"creator": me, "init": {"pid": 0, "start": 1}})
    assert not state_owner_alive({})


def _dead_pid() -> tuple[int, int]:
    proc = subprocess.Popen(["true"])
    start = proc_start_time(proc.pid)
    proc.wait()
    assert start is not None
    return proc.pid, start


def test_reap_stale_removes_only_dead_sessions(tmp_path: Path) -> None:
    paths = CoopPaths(tmp_path / "coop")
    idmap = IdMap.single(os.getuid(), os.getgid())
    pid, start = _dead_pid()
    dead = SessionDir(paths.sessions / "dead")
    live = SessionDir(paths.sessions / "live")
    for sdir in (dead, live):
        for sub in ("upper/x", "work/work", "persist/.cache"):
            (sdir.path / sub).mkdir(parents=True)
    (dead.work / "work").chmod(0)  # overlay leaves its work/work at mode 000
    idmap_json = {"uid_map": [list(x) for x in idmap.uid_map],
                  "gid_map": [list(x) for x in idmap.gid_map]}
    write_json_atomic(dead.sandbox_state,
                      {"init": {"pid": pid, "start": start}, "idmap": idmap_json})
    write_json_atomic(live.sandbox_state,
                      {"creator": {"pid": os.getpid(), "start": proc_start_time(os.getpid())}})
    called: list[CoopPaths] = []
    assert reap_stale(paths, network_reap=called.append) == ["dead"]
    assert called == [paths]
    assert not dead.upper.exists() and not dead.work.exists() and not dead.sandbox_state.exists()
    assert (dead.persist / ".cache").is_dir()
    assert live.upper.exists() and live.sandbox_state.exists()


def test_reap_stale_leaves_a_session_being_started_to_its_starter(tmp_path: Path) -> None:
    """A start claims the directory from reading the old (dead) state to writing its
    own: a reaper in between must not remove what that start is about to use."""
    paths = CoopPaths(tmp_path / "coop")
    pid, start = _dead_pid()
    sdir = SessionDir(paths.sessions / "again")
    (sdir.upper / "x").mkdir(parents=True)
    write_json_atomic(sdir.sandbox_state, {"init": {"pid": pid, "start": start}})
    with claimed(sdir) as ours:
        assert ours
        with claimed(sdir, wait=False) as second:
            assert not second  # the lock really excludes
        assert reap_stale(paths, network_reap=lambda _paths: None) == []
        assert sdir.upper.exists() and sdir.sandbox_state.exists()
    # Released (the start went away without claiming): now it is a dead session's.
    assert reap_stale(paths, network_reap=lambda _paths: None) == ["again"]
    assert not sdir.upper.exists()


def _someone_waits_on(path: Path) -> bool:
    """A blocked ``flock`` on ``path`` (``/proc/locks`` shows waiters with "->")."""
    inode = f":{path.stat().st_ino} "
    with open("/proc/locks") as locks:
        return any("->" in line and inode in line for line in locks)


def test_a_start_waiting_on_a_reaper_that_removes_the_directory_still_starts(
        tmp_path: Path) -> None:
    """The reaper removes the lock file and the emptied directory with the state; a
    start that was waiting on that lock file must take the new one, in a directory made
    again, and record its state there."""
    pid, start = _dead_pid()
    sdir = SessionDir(tmp_path / "sessions" / "again")
    sdir.path.mkdir(parents=True)
    write_json_atomic(sdir.sandbox_state, {"init": {"pid": pid, "start": start}})
    seen: list[object] = []

    def starter() -> None:
        with claimed(sdir) as ours:
            seen.append(read_json(sdir.sandbox_state))
            write_json_atomic(sdir.sandbox_state, {"name": "again"})
            seen.append(ours)

    with claimed(sdir, wait=False) as reaper:
        assert reaper
        thread = threading.Thread(target=starter)
        thread.start()
        wait_for(lambda: _someone_waits_on(sdir.lock), 10.0, "the start to wait")
        clean_transient(sdir, None)
        assert not sdir.path.exists()
    thread.join(10.0)
    assert not thread.is_alive()
    assert seen == [None, True]
    assert read_json(sdir.sandbox_state) == {"name": "again"}


def test_a_reaper_leaves_a_directory_with_no_state_alone(tmp_path: Path) -> None:
    paths = CoopPaths(tmp_path / "coop")
    kept = SessionDir(paths.sessions / "kept")
    (kept.persist / ".cache").mkdir(parents=True)
    assert reap_stale(paths, network_reap=lambda _paths: None) == []
    assert sorted(p.name for p in kept.path.iterdir()) == ["persist"]  # no stray .lock


def test_the_hosts_own_directories_are_never_a_workspace(tmp_path: Path) -> None:
    coop_home = tmp_path / "home" / ".coop"
    coop_home.mkdir(parents=True)
    for path in ("/", "/etc", "/etc/ssh", "/proc", "/sys/kernel", "/dev", "/boot"):
        assert refused_mount(Path(path), coop_home) is not None, path
    assert "coop's own directory" in str(refused_mount(coop_home / "sessions", coop_home))
    assert refused_mount(coop_home, coop_home) is not None
    assert refused_mount(tmp_path / "home", coop_home) is None  # holds it: hidden instead
    assert refused_mount(tmp_path, coop_home) is None
    link = tmp_path / "innocent"
    link.symlink_to("/etc")
    assert refused_mount(link, coop_home) is not None  # a symlink is followed first
