"""``coop init`` / ``coop rebuild`` end to end: the real script, a real registry on loopback."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
from coop_cli import COOP, RunCoop, coop_environ, write_coopfile

from support.images import read_manifest
from support.procs import wait_for

pytestmark = [pytest.mark.registry, pytest.mark.asuser]

STEP_LINE = re.compile(r"^\[(\d+)/(\d+)\] (.*)  (cached|\d+(?:\.\d+)?s|\d+m \d+s)$")


def step_lines(stdout: str) -> list[tuple[int, int, str, str]]:
    """(index, total, description, status) of every finished-step line."""
    out = []
    for line in stdout.splitlines():
        m = STEP_LINE.match(line)
        if m:
            out.append((int(m[1]), int(m[2]), m[3], m[4]))
    return out


def rootfs_line(stdout: str) -> str:
    return next(line for line in stdout.splitlines() if line.startswith("Rootfs:"))


def without_age(line: str) -> str:
    """The Rootfs line minus its age, which moves on between two runs."""
    return re.sub(r"^(Rootfs: +built )(just now|\d+[smhd] ago) ", r"\1", line)


def test_init_builds_then_does_nothing(run_coop: RunCoop, workspace: Path,
                                       test_images: Any) -> None:
    write_coopfile(workspace, test_images.busybox, ["echo built > /built.txt"])
    first = run_coop("init")
    assert first.returncode == 0, first
    steps = step_lines(first.stdout)
    assert [(i, n) for i, n, _, _ in steps] == [(1, 2), (2, 2)], first
    assert steps[1][2] == "echo built > /built.txt"
    assert all(status != "cached" for *_, status in steps), first
    assert "Rootfs " in first.stdout and "2 of 2 steps run" in first.stdout

    second = run_coop("init")
    assert second.returncode == 0, second
    assert step_lines(second.stdout) == [], second  # no step ran, none was even looked at
    assert "Nothing to do" in second.stdout, second

    status = run_coop("status")
    assert status.returncode == 0, status
    line = rootfs_line(status.stdout)
    assert re.fullmatch(r"Rootfs:     built (just now|\d+s ago) \(.*busybox.* \+ 0 packages\)",
                        line), line


def test_quiet_prints_nothing_on_success(run_coop: RunCoop, workspace: Path,
                                         test_images: Any) -> None:
    write_coopfile(workspace, test_images.busybox, ["echo hi"])
    res = run_coop("-q", "init")
    assert res.returncode == 0, res
    assert (res.stdout, res.stderr) == ("", "")
    assert "built" in rootfs_line(run_coop("status").stdout)


def test_verbose_streams_step_output(run_coop: RunCoop, workspace: Path,
                                     test_images: Any) -> None:
    write_coopfile(workspace, test_images.busybox, ["echo streamed-$((6*7))"])
    res = run_coop("-v", "init")
    assert res.returncode == 0, res
    assert "    streamed-42" in res.stdout.splitlines(), res
    quiet = run_coop("init", "--no-cache")
    assert quiet.returncode == 0, quiet
    assert "streamed-42" not in quiet.stdout


def test_failing_step_reports_one_line_tail_and_log(
    run_coop: RunCoop, workspace: Path, test_images: Any, coop_env: Any
) -> None:
    write_coopfile(workspace, test_images.busybox, ["echo first"])
    assert run_coop("init").returncode == 0
    before = without_age(rootfs_line(run_coop("status").stdout))
    assert "built (" in before

    write_coopfile(workspace, test_images.busybox,
                   ["echo first", "echo early-line; echo last-words >&2; exit 3"])
    res = run_coop("init")
    assert res.returncode == 1, res
    lines = res.stderr.splitlines()
    first = lines[0]
    assert first.startswith("error: "), res
    assert "exit code 3" in first and '[3/3] "echo early-line;' in first, first
    m = re.search(r"; see (\S+\.log)$", first)
    assert m, first
    log = Path(m[1].replace("~", str(coop_env.home), 1))
    assert log.is_file()
    assert "last-words" in log.read_text()
    assert "    last-words" in lines[1:], res
    assert "Traceback" not in res.stderr
    # The previous rootfs is untouched and still the workspace's build.
    assert without_age(rootfs_line(run_coop("status").stdout)) == before


def test_failing_step_with_verbose_still_one_error_line(
    run_coop: RunCoop, workspace: Path, test_images: Any
) -> None:
    write_coopfile(workspace, test_images.busybox, ["exit 7"])
    res = run_coop("-v", "init")
    assert res.returncode == 1, res
    errors = [line for line in res.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "exit code 7" in errors[0], res
    assert "not built" in rootfs_line(run_coop("status").stdout)


def test_push_to_the_bench_registry(run_coop: RunCoop, workspace: Path,
                                    test_images: Any) -> None:
    write_coopfile(workspace, test_images.busybox, ["echo pushed > /pushed.txt"])
    host = test_images.busybox.split("/", 1)[0]
    repo = f"coop-run-test/pushed-{os.getpid()}-{os.getuid()}"
    res = run_coop("init", "--push", f"{host}/{repo}:cli")
    assert res.returncode == 0, res
    assert f"Pushed {host}/{repo}" in res.stdout, res
    media_type, manifest = read_manifest(f"http://{host}", repo, "cli")
    assert "manifest" in media_type
    assert manifest.get("layers"), manifest


def test_rebuild_runs_every_step_and_drops_the_old_build(
    run_coop: RunCoop, workspace: Path, test_images: Any, coop_env: Any
) -> None:
    write_coopfile(workspace, test_images.busybox, ["echo one"])
    assert run_coop("init").returncode == 0
    rootfs_dir = Path(coop_env.coop_home) / "rootfs"
    old_keys = {p.name for p in rootfs_dir.iterdir()}
    assert len(old_keys) == 1

    res = run_coop("rebuild")
    assert res.returncode == 0, res
    assert [s for *_, s in step_lines(res.stdout)].count("cached") == 0, res
    assert {p.name for p in rootfs_dir.iterdir()} == old_keys  # same Coopfile, same key

    write_coopfile(workspace, test_images.busybox, ["echo two"])
    res = run_coop("rebuild")
    assert res.returncode == 0, res
    new_keys = {p.name for p in rootfs_dir.iterdir()}
    assert len(new_keys) == 1 and new_keys != old_keys, (old_keys, new_keys)
    assert f"Removed previous rootfs {next(iter(old_keys))[:12]}" in res.stdout


def test_ctrl_c_exits_130_and_keeps_nothing(workspace: Path, test_images: Any,
                                            coop_env: Any) -> None:
    write_coopfile(workspace, test_images.busybox, ["echo started-sleeping; sleep 60"])
    proc = subprocess.Popen(
        [str(COOP), "-v", "init"], cwd=workspace, env=coop_environ(coop_env),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        seen: list[str] = []

        def sleeping() -> bool:
            line = proc.stdout.readline() if proc.stdout else ""
            seen.append(line)
            return "started-sleeping" in line or proc.poll() is not None

        wait_for(sleeping, timeout=120, what="the setup step to start")
        assert proc.poll() is None, "".join(seen)
        os.killpg(proc.pid, signal.SIGINT)  # what the terminal does on Ctrl+C
        rc = proc.wait(timeout=30)
        err = proc.stderr.read() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
    assert rc == 130, err
    assert "interrupted" in err.lower(), err
    status = subprocess.run([str(COOP), "status"], cwd=workspace, env=coop_environ(coop_env),
                            capture_output=True, text=True, check=False, timeout=60)
    assert "not built" in rootfs_line(status.stdout)
