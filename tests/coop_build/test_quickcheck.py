"""The quick up-to-date check: a current build is recognised from the Coopfile's bytes
alone, anything that could change the build key is noticed, and nothing heavy is imported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from coop_build.build import Builder
from coop_build.layers import load_coopfile
from coop_build.paths import CoopPaths
from coop_build.quickcheck import check

COOPFILE = """\
[base]
image = "host"
[agent]
command = "sh"
[env]
TOKEN = "$COOP_QC_TOKEN"
[packages]
brew = ["x"]
[setup]
run = ["echo built > /root/marker"]
"""


@pytest.fixture
def built(coop_env, tmp_path: Path) -> tuple[CoopPaths, Path]:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / "coop.toml").write_text(COOPFILE)
    paths = CoopPaths(coop_env.coop_home)
    environ = dict(os.environ)
    loaded = load_coopfile(workspace=workspace, environ=environ)
    Builder(paths, environ=environ).build(loaded, workspace)
    return paths, workspace


def test_current_build_found_without_loading(built) -> None:
    paths, workspace = built
    hit = check(paths, workspace, environ=dict(os.environ))
    assert hit is not None
    record = json.loads(next(paths.workspaces.glob("*.json")).read_text())
    assert hit.build_key == record["build_key"]


def test_warnings_repeat_exactly(built) -> None:
    paths, workspace = built
    environ = {k: v for k, v in os.environ.items() if k != "COOP_QC_TOKEN"}
    hit = check(paths, workspace, environ=environ)
    assert hit is not None
    full = load_coopfile(workspace=workspace, environ=environ)
    assert hit.warnings == full.warnings
    assert len(hit.warnings) == 2  # the unknown manager and the unset variable
    set_env = {**environ, "COOP_QC_TOKEN": "secret-value"}
    again = check(paths, workspace, environ=set_env)
    assert again is not None
    assert again.warnings == load_coopfile(workspace=workspace, environ=set_env).warnings
    assert not any("secret-value" in w for w in again.warnings)


def test_any_change_in_inputs_is_noticed(built, coop_env) -> None:
    paths, workspace = built
    environ = dict(os.environ)
    coopfile = workspace / "coop.toml"
    coopfile.write_text(COOPFILE + "\n")  # even a blank line: bytes differ
    assert check(paths, workspace, environ=environ) is None
    coopfile.write_text(COOPFILE)
    assert check(paths, workspace, environ=environ) is not None

    global_file = coop_env.config_home / "coop" / "default.toml"
    global_file.parent.mkdir(parents=True, exist_ok=True)
    global_file.write_text('[network]\nmode = "none"\n')
    assert check(paths, workspace, environ=environ) is None
    global_file.unlink()
    assert check(paths, workspace, environ=environ) is not None

    assert check(paths, workspace, environ=environ, overrides={"x": 1}) is None
    assert check(paths, workspace, environ=environ, platform="linux/arm64") is None


def test_id_map_kind_is_part_of_the_fingerprint(built) -> None:
    paths, workspace = built
    environ = dict(os.environ)
    assert check(paths, workspace, environ=environ) is not None
    forced = {**environ, "COOP_IDMAP": "single"}
    from coop_build.idmap import choose_idmap

    if choose_idmap(environ=environ).full:
        assert check(paths, workspace, environ=forced) is None
    else:
        assert check(paths, workspace, environ=forced) is not None


def test_missing_layer_means_not_current(built) -> None:
    paths, workspace = built
    build = json.loads(next(paths.rootfs.glob("*/build.json")).read_text())
    assert build
    for layer in paths.layers.iterdir():
        if layer.is_dir():
            os.rename(layer, layer.with_name(layer.name + ".gone"))
    assert check(paths, workspace, environ=dict(os.environ)) is None


def test_fast_path_imports_nothing_heavy(built, coop_env) -> None:
    paths, workspace = built
    code = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from coop_build.paths import CoopPaths\n"
        "from coop_build.quickcheck import check\n"
        f"hit = check(CoopPaths(Path({str(paths.home)!r})), Path({str(workspace)!r}),"
        " environ=dict(os.environ))\n"
        "assert hit is not None, 'not current'\n"
        "heavy = [m for m in ('pydantic', 'requests', 'oras', 'zstandard', 'asyncio')"
        " if m in sys.modules]\n"
        "print(','.join(heavy) or 'none')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == "none"


def test_a_host_build_of_another_system_is_not_current(built) -> None:
    """image = "host": a build made on another release of the host (its record's system)
    is not current, however unchanged the Coopfile."""
    paths, workspace = built
    assert check(paths, workspace, environ=dict(os.environ)) is not None
    record_path = next(paths.rootfs.glob("*/build.json"))
    record = json.loads(record_path.read_text())
    assert record["host"] and record["system"]
    record["system"] = "debian 11 x86_64; usr etc; bin -> usr/bin"
    record_path.write_text(json.dumps(record))
    assert check(paths, workspace, environ=dict(os.environ)) is None
