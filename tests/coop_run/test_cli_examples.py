"""Every shipped example Coopfile loads and validates; the quickstart agent really runs;
``coop init --example`` writes them, and a workspace without a Coopfile is pointed there."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from coop_cli import RunCoop

from coop_build.layers import load_coopfile
from coop_run.cli.examples import example_files, example_names, examples_dir

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
COOPFILES = sorted(EXAMPLES.glob("*/coop.toml"))
SECRETS = {"ANTHROPIC_API_KEY": "k", "OPENAI_API_KEY": "k"}


def test_the_promised_examples_exist() -> None:
    names = {p.parent.name for p in COOPFILES}
    assert {"quickstart", "claude", "codex", "aider", "python", "node"} <= names


@pytest.mark.parametrize("coopfile", COOPFILES, ids=lambda p: p.parent.name)
def test_example_loads_without_warnings(coopfile: Path, tmp_path: Path) -> None:
    environ = {"HOME": str(tmp_path), **SECRETS}
    loaded = load_coopfile(coopfile, workspace=coopfile.parent,
                           global_path=tmp_path / "none.toml", environ=environ)
    assert loaded.path == coopfile
    assert loaded.warnings == ()
    assert loaded.coopfile.agent.command


def test_quickstart_needs_no_network_at_build_time(tmp_path: Path) -> None:
    loaded = load_coopfile(EXAMPLES / "quickstart" / "coop.toml",
                           global_path=tmp_path / "none.toml", environ={"HOME": str(tmp_path)})
    assert loaded.coopfile.base.is_host
    assert loaded.coopfile.network.mode == "none"
    assert loaded.coopfile.package_count == 0


def test_quickstart_agent_is_an_interactive_loop(tmp_path: Path) -> None:
    agent = EXAMPLES / "quickstart" / "agent.sh"
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path),
           "GREETING": "hi there"}
    proc = subprocess.run(["sh", str(agent)], input="hello agent\nwhoami\nexit\nnever\n",
                          capture_output=True, text=True, env=env, timeout=30, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "hi there" in proc.stdout
    assert "you said: hello agent" in proc.stdout
    assert f"uid={os.getuid()}" in proc.stdout
    assert "agent: bye" in proc.stdout
    assert "never" not in proc.stdout


# --- first contact: coop init --example, and a workspace without a Coopfile -----------------

NAMES = "aider, ci-prebuild, claude, codex, node, python, quickstart"
HINT = f"start from an example: coop init --example NAME ({NAMES})"


def test_the_cli_offers_every_example_of_the_checkout() -> None:
    assert examples_dir() == EXAMPLES  # an editable install reads the checkout's
    assert example_names() == sorted(p.parent.name for p in COOPFILES)
    assert [p.name for p in example_files("quickstart")] == ["coop.toml", "agent.sh"]
    assert [p.name for p in example_files("ci-prebuild")] == ["coop.toml", "prebuild.py"]


def test_init_without_a_coopfile_points_to_the_examples(run_coop: RunCoop) -> None:
    for args in (("init",), ("rebuild",), ("init", "--no-cache")):
        res = run_coop(*args)
        assert (res.returncode, res.stdout) == (2, ""), (args, res)
        assert res.stderr == f"error: no ./coop.toml here; {HINT}\n", (args, res)
    assert "Rootfs:     not built" in run_coop("status").stdout


def test_init_w_names_the_directory_as_typed(run_coop: RunCoop, coop_env: Any,
                                             workspace: Path) -> None:
    project = coop_env.home / "proj"
    project.mkdir()
    res = run_coop("init", "-w", str(project), cwd=workspace)
    assert res.returncode == 2, res
    hint = HINT.replace("coop init", "coop init -w ~/proj")
    assert res.stderr == f"error: no ~/proj/coop.toml; {hint}\n", res


def test_a_global_layer_with_an_agent_needs_no_workspace_coopfile(run_coop: RunCoop,
                                                                  coop_env: Any) -> None:
    """SPEC 2: [agent].command is required somewhere in the chain, not in ./coop.toml."""
    default = coop_env.config_home / "coop" / "default.toml"
    default.parent.mkdir(parents=True)
    default.write_text('[base]\nimage = "host"\n[agent]\ncommand = "/bin/sh"\n')
    res = run_coop("init")
    assert res.returncode == 0, res
    assert "1 of 1 steps run" in res.stdout, res
    # ...and a global layer without one gets the first-contact line, not a missing key
    default.write_text('[base]\nimage = "host"\n')
    res = run_coop("init")
    assert (res.returncode, res.stderr) == (2, f"error: no ./coop.toml here; {HINT}\n"), res
    # an invalid global layer is reported as such
    default.write_text("[base\n")
    res = run_coop("init")
    assert res.returncode == 2, res
    assert res.stderr.startswith("error: ~/.config/coop/default.toml:1:6: invalid TOML"), res


def test_init_example_writes_the_quickstart_then_builds_it(run_coop: RunCoop,
                                                           workspace: Path) -> None:
    res = run_coop("init", "--example", "quickstart")
    assert res.returncode == 0, res
    lines = res.stdout.splitlines()
    assert lines[0] == "Wrote ./coop.toml, ./agent.sh from the quickstart example", res
    assert "3 of 3 steps run" in lines[-1], res
    for name in ("coop.toml", "agent.sh"):
        assert (workspace / name).read_bytes() == (EXAMPLES / "quickstart" / name).read_bytes()
    assert os.access(workspace / "agent.sh", os.X_OK)
    status = run_coop("status")
    assert "Agent:      /bin/sh /workspace/agent.sh" in status.stdout, status
    assert "Rootfs:     built" in status.stdout, status


def test_init_example_never_overwrites(run_coop: RunCoop, workspace: Path) -> None:
    (workspace / "coop.toml").write_text("# mine\n")
    res = run_coop("init", "--example", "quickstart")
    assert (res.returncode, res.stdout) == (1, ""), res
    assert res.stderr == ("error: ./coop.toml already exists; "
                          "coop init --example writes only new files\n"), res
    assert (workspace / "coop.toml").read_text() == "# mine\n"
    assert not (workspace / "agent.sh").exists()
    # any file of the example counts, and nothing is written when one exists
    (workspace / "coop.toml").unlink()
    (workspace / "agent.sh").write_text("mine\n")
    res = run_coop("init", "--example", "quickstart")
    assert res.returncode == 1 and "./agent.sh already exists" in res.stderr, res
    assert not (workspace / "coop.toml").exists()


def test_init_example_into_w(run_coop: RunCoop, coop_env: Any, workspace: Path) -> None:
    project = coop_env.home / "proj"
    project.mkdir()
    res = run_coop("init", "--example", "quickstart", "-w", str(project), cwd=workspace)
    assert res.returncode == 0, res
    assert res.stdout.startswith("Wrote ~/proj/coop.toml, ~/proj/agent.sh from"), res
    assert sorted(p.name for p in project.iterdir()) == ["agent.sh", "coop.toml"]
    assert list(workspace.iterdir()) == []
    assert "Rootfs:     built" in run_coop("status", cwd=project).stdout


def test_init_example_refuses_bad_arguments(run_coop: RunCoop, workspace: Path) -> None:
    res = run_coop("init", "--example", "nope")
    assert res.returncode == 2, res
    assert f"Invalid value for '--example': no example 'nope' (examples: {NAMES})" in res.stderr
    (workspace / "other.toml").write_text('[agent]\ncommand = "sh"\n')
    res = run_coop("init", "--example", "quickstart", "-f", "other.toml")
    assert res.returncode == 2 and "drop -f" in res.stderr, res
    assert sorted(p.name for p in workspace.iterdir()) == ["other.toml"]
