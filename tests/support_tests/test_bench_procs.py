"""The process helpers and the bench's leak check."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from support.procs import (
    WaitTimeout,
    children,
    free_port,
    pid_alive,
    proc_info,
    stop_pid,
    wait_for,
    with_descendants,
)

TESTS_DIR = Path(__file__).resolve().parent.parent


def test_wait_for_returns_the_first_truthy_value() -> None:
    calls = iter([0, None, "", "ready"])
    assert wait_for(lambda: next(calls), 5.0, "the value") == "ready"


def test_wait_for_names_what_timed_out() -> None:
    with pytest.raises(WaitTimeout, match="waiting for the impossible"):
        wait_for(lambda: False, 0.05, "the impossible")


def test_free_port_is_bindable_on_loopback() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_stop_pid_terminates_and_reaps_a_child() -> None:
    proc = subprocess.Popen(["sleep", "60"])
    assert proc.pid in {p.pid for p in children()}
    stop_pid(proc.pid, timeout=5.0)
    assert proc_info(proc.pid) is None  # reaped, not a zombie
    proc.poll()


def test_stop_pid_kills_what_ignores_sigterm(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    code = ("import pathlib, signal, sys, time\n"
            "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
            "pathlib.Path(sys.argv[1]).touch()\n"
            "time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(ready)])
    wait_for(ready.exists, 10.0, "the child to ignore SIGTERM")
    stop_pid(proc.pid, timeout=0.3)
    assert not pid_alive(proc.pid)  # stop_pid reaped it: Popen cannot see the status
    proc.wait()  # ECHILD: Popen forgets the child instead of warning that it runs


def test_stop_pid_of_a_finished_process_is_quiet() -> None:
    proc = subprocess.Popen(["true"])
    proc.wait()
    stop_pid(proc.pid, timeout=1.0)


def _run_inner(tmp_path: Path, body: str, **environ: str) -> subprocess.CompletedProcess[str]:
    """Runs a pytest session with the bench's conftest over one test file."""
    (tmp_path / "conftest.py").write_text((TESTS_DIR / "conftest.py").read_text())
    (tmp_path / "test_inner.py").write_text(textwrap.dedent(body))
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\nmarkers =\n    rootonly: root only\n    needs: needs\n"
        "addopts = -p no:cacheprovider --strict-markers\n")
    env = dict(os.environ, PYTHONPATH=str(TESTS_DIR), PYTHONDONTWRITEBYTECODE="1", **environ)
    # Its own temporary root: pytest removes old runs' directories, which must never be
    # the outer run's (nor what other users' sub-ids left there).
    basetemp = tmp_path / "inner-tmp"
    return subprocess.run([sys.executable, "-m", "pytest", "-q", f"--basetemp={basetemp}",
                           str(tmp_path)], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=120, check=False)


def test_a_test_leaving_a_child_running_fails_and_the_child_dies(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    result = _run_inner(tmp_path, f"""
        import subprocess
        def test_leaks():
            proc = subprocess.Popen(["sleep", "60"])
            open({str(pidfile)!r}, "w").write(str(proc.pid))
        def test_clean():
            subprocess.run(["true"], check=True)
    """)
    assert result.returncode == 1, result.stdout
    assert "test left processes running" in result.stdout
    assert "sleep 60" in result.stdout
    assert "2 passed, 1 error" in result.stdout
    assert not pid_alive(int(pidfile.read_text()))


def test_a_daemonised_orphan_is_caught_too(tmp_path: Path) -> None:
    """Double fork: the grandchild leaves pytest's children but keeps the session marker."""
    pidfile = tmp_path / "pid"
    result = _run_inner(tmp_path, f"""
        import subprocess
        def test_daemonises():
            script = "sleep 60 </dev/null >/dev/null 2>&1 & echo $! > {pidfile}"
            subprocess.run(["sh", "-c", script], check=True)
    """)
    assert result.returncode == 1, result.stdout
    assert "test left processes running" in result.stdout
    assert not pid_alive(int(pidfile.read_text()))


def test_with_descendants_follows_children_and_grandchildren(tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild"
    script = f"sleep 60 & echo $! > {pidfile}; wait"
    proc = subprocess.Popen(["sh", "-c", script])
    grandchild: int | None = None
    try:
        wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), 10.0,
                 "the grandchild")
        grandchild = int(pidfile.read_text())
        assert with_descendants([proc.pid]) == sorted([proc.pid, grandchild])
        assert with_descendants([grandchild]) == [grandchild]
    finally:
        stop_pid(proc.pid, timeout=2.0)
        proc.wait()
        if grandchild is not None:
            stop_pid(grandchild, timeout=2.0)


def test_a_grandchild_without_the_marker_is_caught_too(tmp_path: Path) -> None:
    """As a sandbox's coop-init runs with an empty environment: found below its parent."""
    pidfile = tmp_path / "pid"
    result = _run_inner(tmp_path, f"""
        import subprocess
        from pathlib import Path
        from support.procs import wait_for
        def test_leaks_an_unmarked_grandchild():
            pidfile = Path({str(pidfile)!r})
            script = f"env -i sleep 60 & echo $! > {{pidfile}}; exec sleep 60"
            subprocess.Popen(["sh", "-c", script])
            wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), 10.0,
                     "the grandchild")
    """)
    assert result.returncode == 1, result.stdout
    assert "test left processes running" in result.stdout
    assert not pid_alive(int(pidfile.read_text()))


def test_rootonly_tests_are_skipped_for_users_only(tmp_path: Path) -> None:
    result = _run_inner(tmp_path, """
        import os, pytest
        @pytest.mark.rootonly
        def test_root():
            assert os.geteuid() == 0
    """)
    assert result.returncode == 0, result.stdout
    if os.geteuid() == 0:
        assert "1 passed" in result.stdout
    else:
        assert "1 skipped" in result.stdout


@pytest.mark.parametrize("ci", ["", "true"])
def test_what_is_missing_skips_locally_and_fails_in_ci(tmp_path: Path, ci: str) -> None:
    result = _run_inner(tmp_path, """
        from support.require import needs, require
        def test_call():
            require(False, "frobnicator not installed")
        @needs(False, "frobnicator not installed")
        def test_mark():
            raise AssertionError("ran without what it needs")
        @needs(True, "frobnicator not installed")
        def test_present():
            require(True, "frobnicator not installed")
    """, CI=ci)
    if ci:
        assert result.returncode == 1, result.stdout
        # the call fails the test; the mark fails its set-up, before the body runs
        assert "1 failed, 1 passed, 1 error" in result.stdout, result.stdout
        for line in ("FAILED test_inner.py::test_call", "ERROR test_inner.py::test_mark"):
            assert f"{line} - Failed: frobnicator not installed (CI=true: a missing" in (
                result.stdout), result.stdout
        assert "ran without what it needs" not in result.stdout
    else:
        assert result.returncode == 0, result.stdout
        assert "1 passed, 2 skipped" in result.stdout, result.stdout
