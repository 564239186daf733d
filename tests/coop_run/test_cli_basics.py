"""The ``coop`` script's global behaviour: options, exit codes, status, start-up cost."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from coop_cli import COOP, RunCoop, coop_environ

from coop_build.errors import CoopfileError
from coop_build.layers import load_coopfile

STATUS_LABELS = ("Daemon:", "Rootfs:", "Coopfile:", "Agent:", "Network:", "Sessions:")


def test_help_lists_the_commands_of_this_issue(run_coop: RunCoop) -> None:
    for flag in ("--help", "-h"):
        res = run_coop(flag)
        assert res.returncode == 0, res
        for word in ("init", "rebuild", "status", "--config", "--socket", "--verbose",
                     "--quiet", "--version"):
            assert word in res.stdout, (word, res)


def test_version(run_coop: RunCoop) -> None:
    res = run_coop("--version")
    assert res.returncode == 0, res
    assert re.fullmatch(r"coop \d+\.\d+\.\d+\n", res.stdout), res


def test_unknown_option_is_a_usage_error(run_coop: RunCoop) -> None:
    res = run_coop("init", "--frobnicate")
    assert res.returncode == 2, res
    assert "No such option" in res.stderr and "--frobnicate" in res.stderr
    assert "Traceback" not in res.stderr
    res = run_coop("--frobnicate", "status")
    assert res.returncode == 2, res


def test_unknown_command_and_conflicting_flags_exit_2(run_coop: RunCoop) -> None:
    assert run_coop("frobnicate").returncode == 2
    res = run_coop("-v", "-q", "status")
    assert res.returncode == 2, res
    assert "cannot be used together" in res.stderr


def test_init_with_missing_file_is_a_usage_error(run_coop: RunCoop, workspace: Path) -> None:
    res = run_coop("init", "-f", str(workspace / "nope.toml"))
    assert res.returncode == 2, res
    assert "nope.toml" in res.stderr


def test_a_bad_session_name_is_a_usage_error_before_any_daemon(run_coop: RunCoop,
                                                                coop_env: Any) -> None:
    """``-n`` is checked by the rule the daemon applies (``layout.check_session_name``)."""
    for name in ("a/b", "a b", "..", "x" * 64):
        res = run_coop("-d", "-n", name)
        assert res.returncode == 2, (name, res)
        assert "-n/--name" in res.stderr and "invalid session name" in res.stderr, res
        assert "Traceback" not in res.stderr
    assert not (Path(coop_env.coop_home) / "sock").exists()  # no daemon was started


def test_status_before_init(run_coop: RunCoop, workspace: Path) -> None:
    (workspace / "coop.toml").write_text(
        '[base]\nimage = "host"\n[agent]\ncommand = "claude"\nargs = ["--x"]\n'
        '[network]\nmode = "none"\n'
    )
    res = run_coop("status")
    assert res.returncode == 0, res
    lines = res.stdout.splitlines()
    assert [line.split()[0] for line in lines] == list(STATUS_LABELS)
    assert lines == [
        "Daemon:     not running",
        "Rootfs:     not built (run coop init)",
        "Coopfile:   ./coop.toml",
        "Agent:      claude --x",
        "Network:    none",
        "Sessions:   0 running",
    ]
    assert res.stderr == ""


def test_status_without_a_coopfile(run_coop: RunCoop) -> None:
    res = run_coop("status")
    assert res.returncode == 0, res
    assert "Coopfile:   none" in res.stdout
    assert "Rootfs:     not built (run coop init)" in res.stdout


def test_status_reads_the_global_layer_and_config_flag(
    run_coop: RunCoop, workspace: Path, tmp_path: Path, coop_env: Any
) -> None:
    (workspace / "coop.toml").write_text('[base]\nimage = "host"\n')
    default = Path(coop_env.config_home) / "coop" / "default.toml"
    default.parent.mkdir(parents=True, exist_ok=True)
    default.write_text('[agent]\ncommand = "aider"\n')
    assert "Agent:      aider" in run_coop("status").stdout
    other = tmp_path / "other.toml"
    other.write_text('[agent]\ncommand = "codex"\n[network]\nmode = "host"\n')
    res = run_coop("--config", str(other), "status")
    assert res.returncode == 0, res
    assert "Agent:      codex" in res.stdout
    assert "Network:    host (shares the host's network: its addresses, its loopback services " \
        "and its abstract Unix sockets" in res.stdout


def test_status_never_trusts_a_stale_pid_file(run_coop: RunCoop, coop_env: Any) -> None:
    """A pid file alone does not make a daemon: status asks the socket (the real daemon's
    running / not responding cases are in tests/coop_run/daemon)."""
    home = Path(coop_env.coop_home)
    home.mkdir(parents=True, exist_ok=True)
    pid_file = home / "daemon.pid"
    pid_file.write_text(f"{os.getpid()}\n")  # alive, but pytest, not a coop daemon
    assert "Daemon:     not running" in run_coop("status").stdout
    # A pid that is not running: a child we started and reaped.
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)
    pid_file.write_text(child.stdout)
    assert "Daemon:     not running" in run_coop("status").stdout
    pid_file.write_text("garbage")
    assert "Daemon:     not running" in run_coop("status").stdout
    assert not (home / "sock").exists()  # and status started no daemon


def test_invalid_coopfile_is_one_line_and_exit_2(run_coop: RunCoop, workspace: Path,
                                                 coop_env: Any) -> None:
    path = workspace / "coop.toml"
    path.write_text('[agent]\ncommand = "sh"\n[network]\nmode = "bridge"\n')
    old = Path.cwd()
    os.chdir(workspace)
    try:
        try:
            load_coopfile(path, workspace=workspace, environ=coop_environ(coop_env))
        except CoopfileError as exc:
            expected = exc.message
        else:
            raise AssertionError("load_coopfile accepted mode = bridge")
    finally:
        os.chdir(old)
    assert "[network].mode" in expected and "bridge" in expected
    for args in (("init",), ("init", "-f", "coop.toml"), ("rebuild",)):
        res = run_coop(*args)
        assert res.returncode == 2, (args, res)
        assert res.stderr == f"error: {expected}\n", (args, res)
        assert res.stdout == ""
    # status shows what it can, then the same one line, and exits 2 as well.
    res = run_coop("status")
    assert res.returncode == 2, res
    assert "Coopfile:   ./coop.toml (invalid)" in res.stdout
    assert res.stderr == f"error: {expected}\n"


def test_invalid_toml_says_where(run_coop: RunCoop, workspace: Path) -> None:
    (workspace / "coop.toml").write_text('[agent]\ncommand = "sh\n')
    res = run_coop("init")
    assert res.returncode == 2, res
    assert len(res.stderr.splitlines()) == 1, res
    assert res.stderr.startswith("error: ./coop.toml:2:"), res


def test_status_and_help_do_not_import_the_registry_stack(workspace: Path, coop_env: Any) -> None:
    (workspace / "coop.toml").write_text('[base]\nimage = "host"\n[agent]\ncommand = "sh"\n')
    heavy = ("requests", "oras", "aiohttp", "urllib3")
    for args in (["--help"], ["status"]):
        proc = subprocess.run(
            [sys.executable, "-X", "importtime", "-m", "coop_run.cli.main", *args],
            cwd=workspace, env=coop_environ(coop_env), capture_output=True, text=True,
            check=False, timeout=60,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines()
                    if line.startswith("import time:")}
        assert "coop_run.cli.status" in imported  # the measurement itself works
        loaded = sorted(m for m in imported if m.split(".")[0] in heavy)
        assert loaded == [], (args, loaded)
    assert COOP.exists()


def test_coopfile_warnings_go_to_stderr_and_q_silences_them(run_coop: RunCoop,
                                                            workspace: Path) -> None:
    (workspace / "coop.toml").write_text(
        '[base]\nimage = "host"\n[agent]\ncommand = "sh"\n'
        '[env]\nTOKEN = "$COOP_RUN_TEST_SURELY_UNSET"\n'
    )
    res = run_coop("init")
    assert res.returncode == 0, res
    assert res.stderr == ("warning: ./coop.toml: [env].TOKEN: $COOP_RUN_TEST_SURELY_UNSET "
                          "is not set in your environment\n"), res
    assert "[1/1] image host" in res.stdout
    quiet = run_coop("-q", "init")
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, "", "")


def test_the_quickstart_builds_offline(run_coop: RunCoop) -> None:
    quickstart = Path(__file__).resolve().parents[2] / "examples" / "quickstart"
    res = run_coop("init", cwd=quickstart)
    assert res.returncode == 0, res
    assert "3 of 3 steps run" in res.stdout, res
    status = run_coop("status", cwd=quickstart)
    assert "Rootfs:     built" in status.stdout and "(host + 0 packages)" in status.stdout
    assert "Agent:      /bin/sh /workspace/agent.sh" in status.stdout
