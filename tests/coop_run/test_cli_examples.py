"""Every shipped example Coopfile loads and validates; the quickstart agent really runs."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from coop_build.layers import load_coopfile

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
