"""Every example Coopfile is validated and planned (steps and keys) without building.

Each example goes through coop_build's real loader (no global layer) and the Builder's
plan, the way ``coop init`` starts, but nothing is built, pulled or written: a pulled
image is planned by its reference as written, so no registry is asked for a digest. The
commands of the plan are compared with the Coopfile's own text, and ``EXPECTED`` names
every example: adding one without covering it here fails ``test_every_example_is_covered``.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from coop_build import hostlayer
from coop_build.api import Builder, BuildPlan, LoadedCoopfile, load_coopfile
from coop_build.coopfile import KNOWN_MANAGERS
from coop_build.paths import CoopPaths
from coop_build.reference import parse_reference

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
COOPFILES = sorted(EXAMPLES.glob("*/coop.toml"))
SECRETS = {"ANTHROPIC_API_KEY": "k", "OPENAI_API_KEY": "k"}
SYSTEM_MANAGERS = ("apk", "apt", "dnf", "pacman")


class Expected(NamedTuple):
    image: str  # base.image as written
    kinds: tuple[str, ...]  # the step kinds, bottom to top
    last: str | None  # the last step's command (None: the base step is the only one)


EXPECTED: dict[str, Expected] = {
    "aider": Expected("python:3.12-slim", ("base", "packages", "install"),
                      "pip install --no-cache-dir aider-chat"),
    "ci-prebuild": Expected("debian:bookworm-slim", ("base", "packages", "setup"),
                            "git config --system init.defaultBranch main"),
    "claude": Expected("node:22-alpine", ("base", "packages", "install"),
                       "npm install -g @anthropic-ai/claude-code"),
    "codex": Expected("node:22-alpine", ("base", "packages", "install"),
                      "npm install -g @openai/codex"),
    "node": Expected("node:22-alpine", ("base", "packages", "packages"),
                     "npm install -g --no-audit --no-fund typescript"),
    "python": Expected("python:3.12-slim", ("base", "packages", "packages", "setup"),
                       "python -m pip --version"),
    "quickstart": Expected("host", ("base", "setup", "setup"),
                           "echo 'built by coop init' > /opt/quickstart/motd"),
}


def _no_network(*args: object, **kwargs: object) -> None:
    raise AssertionError(f"planning an example touched the network: {args!r}")


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any connection or name lookup during planning fails the test."""
    monkeypatch.setattr(socket.socket, "connect", _no_network)
    monkeypatch.setattr(socket.socket, "connect_ex", _no_network)
    monkeypatch.setattr(socket, "getaddrinfo", _no_network)
    monkeypatch.setattr(socket, "create_connection", _no_network)


def load(coopfile: Path, tmp_path: Path, overrides: dict[str, Any] | None = None
         ) -> LoadedCoopfile:
    environ = {"HOME": str(tmp_path), **SECRETS}
    return load_coopfile(coopfile, workspace=coopfile.parent, overrides=overrides,
                         global_path=tmp_path / "absent" / "default.toml", environ=environ)


def expected_commands(raw: dict[str, Any], plan: BuildPlan) -> list[str]:
    """The step commands the Coopfile's text asks for, in build order (SPEC 3)."""
    packages: dict[str, list[str]] = raw.get("packages", {})
    managers = [m for m in SYSTEM_MANAGERS if m in packages]
    managers += [m for m in KNOWN_MANAGERS if m in packages and m not in SYSTEM_MANAGERS]
    commands: list[str] = []
    for manager, step in zip(managers, [s for s in plan.steps if s.kind == "packages"],
                             strict=True):
        assert step.definition["manager"] == manager
        assert step.definition["packages"] == packages[manager]
        assert step.command is not None
        commands.append(step.command)
    commands += raw.get("setup", {}).get("run", [])
    install = raw.get("agent", {}).get("install")
    if install is not None:
        commands.append(install)
    return commands


def test_every_example_is_covered() -> None:
    assert sorted(EXPECTED) == [p.parent.name for p in COOPFILES]


@pytest.mark.parametrize("coopfile", COOPFILES, ids=lambda p: p.parent.name)
@pytest.mark.usefixtures("offline")
def test_example_plans_without_building(coopfile: Path, tmp_path: Path) -> None:
    expected = EXPECTED[coopfile.parent.name]
    raw = tomllib.loads(coopfile.read_text())
    loaded = load(coopfile, tmp_path)
    assert loaded.sources == (coopfile,)  # the global layer is absent
    home = tmp_path / "coop-home"
    builder = Builder(CoopPaths(home), environ={"HOME": str(tmp_path)})
    plan = builder.plan(loaded)

    assert plan.image == raw["base"]["image"] == expected.image
    assert tuple(s.kind for s in plan.steps) == expected.kinds
    base = plan.steps[0]
    assert base.command is None
    if plan.host:
        # Keyed by the host's release and directory shape, never by its packages.
        assert base.definition == {"kind": "base", "image": "host",
                                   "system": hostlayer.system_identity(),
                                   "skeleton": hostlayer.SKELETON_FORMAT}
    else:  # the reference as written, normalised: no digest, so no registry was needed
        assert base.definition["image"] == str(parse_reference(expected.image))
        assert "@" not in base.definition["image"]
        assert base.definition["platform"] == plan.platform
    commands = [s.command for s in plan.steps[1:]]
    assert commands == expected_commands(raw, plan)
    assert commands[-1] == expected.last

    keys = [s.key for s in plan.steps]
    assert all(len(k) == 64 and int(k, 16) >= 0 for k in keys)
    assert len(set(keys)) == len(keys)
    assert plan.build_key == keys[-1]
    again = builder.plan(load(coopfile, tmp_path))
    assert again == plan
    assert len(builder.fingerprint(loaded)) == 64
    assert not home.exists()  # planning writes nothing

    # Changing the top step changes its key only: every step below stays cached.
    top = raw.get("agent", {}).get("install")
    overrides = ({"agent": {"install": f"{top} # again"}} if top is not None
                 else {"setup": {"run": [*raw["setup"]["run"][:-1], f"{expected.last} # again"]}}
                 if raw.get("setup") else {"packages": {"npm": ["typescript", "tsx"]}})
    changed = builder.plan(load(coopfile, tmp_path, overrides))
    assert [s.key for s in changed.steps[:-1]] == keys[:-1]
    assert changed.build_key != plan.build_key


PLAN_ALL = """
import json, sys
from pathlib import Path
from coop_build.api import Builder, CoopPaths, load_coopfile
keys = {}
for name in sys.argv[2:]:
    ws = Path(sys.argv[1]) / name
    loaded = load_coopfile(ws / "coop.toml", workspace=ws, global_path=ws / "absent.toml")
    keys[name] = Builder(CoopPaths(Path("/nonexistent/coop-home"))).plan(loaded).build_key
heavy = sorted(m for m in ("requests", "oras", "urllib3", "coop_build.pull",
               "coop_build.registry", "coop_build.export", "coop_build.unpack")
               if m in sys.modules)
print(json.dumps({"keys": keys, "heavy": heavy}))
"""


def test_planning_every_example_loads_no_registry_code(tmp_path: Path) -> None:
    """A fresh interpreter plans them all without importing the pull or registry code."""
    names = [p.parent.name for p in COOPFILES]
    env = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin", **SECRETS}
    proc = subprocess.run([sys.executable, "-c", PLAN_ALL, str(EXAMPLES), *names],
                          capture_output=True, text=True, env=env, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["heavy"] == []
    assert sorted(out["keys"]) == names
    for name, key in out["keys"].items():
        assert key == Builder(CoopPaths(tmp_path / "h")).plan(
            load(EXAMPLES / name / "coop.toml", tmp_path)).build_key, name
