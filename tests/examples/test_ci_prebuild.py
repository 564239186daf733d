"""examples/ci-prebuild: the CI script builds and pushes with coop_build alone."""

from __future__ import annotations

import ast
import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from coop_build.idmap import choose_idmap
from coop_build.namespace import remove_tree

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "ci-prebuild"
SCRIPT = EXAMPLE / "prebuild.py"


def test_script_imports_only_coop_build_and_stdlib() -> None:
    tree = ast.parse(SCRIPT.read_text())
    modules: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module.split(".")[0])
    third_party = modules - set(sys.stdlib_module_names) - {"__future__"}
    assert third_party == {"coop_build"}


def test_example_coopfile_is_valid(tmp_path: Path) -> None:
    from coop_build.layers import load_coopfile

    loaded = load_coopfile(EXAMPLE / "coop.toml", workspace=EXAMPLE,
                           global_path=tmp_path / "none.toml", environ={})
    assert loaded.coopfile.build.prebuilt == "registry.example.com/team/coop-env"


@pytest.fixture
def ci_home(tmp_path: Path) -> Iterator[Path]:
    home = tmp_path / "ci-home"
    yield home
    remove_tree(home, choose_idmap())


@pytest.mark.registry
@pytest.mark.slow
def test_script_builds_and_pushes(
    registry: Any, test_images: Any, ci_home: Path, tmp_path: Path
) -> None:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / "coop.toml").write_text(
        f'[base]\nimage = "{test_images.busybox}"\n'
        '[setup]\nrun = ["echo from-ci > /ci.txt"]\n'
        '[agent]\ncommand = "sh"\n'
    )
    repo = f"{registry.host}/coop/example-{secrets.token_hex(4)}"
    env = {**os.environ, "COOP_HOME": str(ci_home)}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--file", str(workspace / "coop.toml"),
         "--workspace", str(workspace), "--push", f"{repo}:ci"],
        capture_output=True, text=True, env=env, timeout=240, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["steps_run"] == 2 and summary["steps_total"] == 2
    assert summary["pushed"].startswith(f"{repo}:{summary['build_key']}@sha256:")
    assert "[2/2] echo from-ci > /ci.txt" in proc.stderr

    for tag in (summary["build_key"], "ci"):
        out = subprocess.run(
            ["skopeo", "inspect", "--tls-verify=false", f"docker://{repo}:{tag}"],
            capture_output=True, text=True, timeout=60, check=False,
        )
        assert out.returncode == 0, out.stderr
        info = json.loads(out.stdout)
        assert info["Labels"]["org.coop.build-key"] == summary["build_key"]
        assert len(info["Layers"]) == 2
