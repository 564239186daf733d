"""The build plan: step order, descriptions, and chained keys that change only downstream."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from coop_build import steps as steps_mod
from coop_build.coopfile import Coopfile
from coop_build.hostlayer import SKELETON_FORMAT
from coop_build.steps import BuildPlan, plan_steps, step_key


def coopfile(**tables: Any) -> Coopfile:
    data: dict[str, Any] = {"agent": {"command": "sh"}}
    data.update(tables)
    return Coopfile.model_validate(data)


def plan(cf: Coopfile, *, platform: str = "linux/amd64", single: bool = False) -> BuildPlan:
    return plan_steps(cf, platform=platform, single_idmap=single)


def keys(p: BuildPlan) -> list[str]:
    return [s.key for s in p.steps]


FULL = {
    "base": {"image": "debian:bookworm"},
    "packages": {"npm": ["is-number"], "pip": ["six"], "apt": ["jq", "git"]},
    "setup": {"run": ["echo one", "echo two", "echo three"]},
    "agent": {"command": "claude", "install": "npm i -g claude"},
}


def test_order_kinds_and_descriptions() -> None:
    p = plan(coopfile(**FULL))
    assert [(s.kind, s.description) for s in p.steps] == [
        ("base", "image debian:bookworm (linux/amd64)"),
        ("packages", "apt install jq git"),
        ("packages", "pip install six"),
        ("packages", "npm install is-number"),
        ("setup", "echo one"),
        ("setup", "echo two"),
        ("setup", "echo three"),
        ("install", "npm i -g claude"),
    ]
    assert p.build_key == p.steps[-1].key
    assert p.image == "debian:bookworm"
    assert p.platform == "linux/amd64"
    assert not p.host
    assert p.package_count == 4
    assert p.steps[0].command is None
    assert p.steps[4].command == "echo one"
    assert p.steps[1].command is not None and p.steps[1].command.startswith("apt-get update")
    for s in p.steps:
        assert len(s.key) == 64 and all(c in "0123456789abcdef" for c in s.key)
    assert len(set(keys(p))) == len(p.steps)


def test_same_coopfile_same_keys() -> None:
    assert keys(plan(coopfile(**FULL))) == keys(plan(coopfile(**FULL)))


def test_changing_one_setup_command_changes_it_and_later_keys_only() -> None:
    before = keys(plan(coopfile(**FULL)))
    changed = dict(FULL, setup={"run": ["echo one", "echo TWO", "echo three"]})
    after = keys(plan(coopfile(**changed)))
    assert after[:5] == before[:5]
    assert len(after) == len(before) > 5  # the loop below checks something
    assert all(a != b for a, b in zip(after[5:], before[5:], strict=True))


def test_adding_a_setup_command_at_the_end_keeps_earlier_keys() -> None:
    cf = coopfile(setup={"run": ["a"]})
    longer = coopfile(setup={"run": ["a", "b"]})
    assert keys(plan(longer))[:2] == keys(plan(cf))


def test_changing_the_image_changes_every_key() -> None:
    other = dict(FULL, base={"image": "debian:trixie"})
    assert not set(keys(plan(coopfile(**FULL)))) & set(keys(plan(coopfile(**other))))


def test_image_reference_is_normalised() -> None:
    short = plan(coopfile(base={"image": "alpine:3"}))
    long = plan(coopfile(base={"image": "docker.io/library/alpine:3"}))
    assert short.build_key == long.build_key
    assert short.steps[0].definition == {
        "kind": "base",
        "image": "registry-1.docker.io/library/alpine:3",
        "platform": "linux/amd64",
    }
    # What the user wrote is what the record shows.
    assert long.image == "docker.io/library/alpine:3"


def test_platform_is_part_of_the_base_key() -> None:
    cf = coopfile()
    assert plan(cf).build_key != plan(cf, platform="linux/arm64/v8").build_key


def test_idmap_changes_only_apt_steps() -> None:
    no_apt = coopfile(packages={"pip": ["six"]}, setup={"run": ["true"]})
    assert keys(plan(no_apt, single=True)) == keys(plan(no_apt, single=False))
    with_apt = coopfile(**FULL)
    single, full = keys(plan(with_apt, single=True)), keys(plan(with_apt, single=False))
    assert single[0] == full[0]
    assert single[1] != full[1]
    assert "APT::Sandbox::User=root" in plan(with_apt, single=True).steps[1].definition["command"]


def test_host_image() -> None:
    """The host image's base is keyed by the host's system (its skeleton is the host's
    directories: ``hostlayer``), never by the platform asked for."""
    cf = coopfile(base={"image": "host"}, setup={"run": ["true"]})
    p = plan_steps(cf, platform="linux/amd64", single_idmap=False, host_system="debian 12")
    assert p.host and p.system == "debian 12"
    assert p.steps[0].definition == {"kind": "base", "image": "host", "system": "debian 12",
                                     "skeleton": SKELETON_FORMAT}
    assert p.steps[0].description == "image host"
    # The host image is not pulled, so the platform does not key it.
    other = plan_steps(cf, platform="linux/arm64", single_idmap=False, host_system="debian 12")
    assert p.build_key == other.build_key
    upgraded = plan_steps(cf, platform="linux/amd64", single_idmap=False,
                          host_system="debian 13")
    assert all(a != b for a, b in zip(keys(p), keys(upgraded), strict=True))
    assert plan(coopfile(base={"image": "debian:bookworm"})).system == ""


def test_unknown_and_empty_managers_are_skipped() -> None:
    p = plan(coopfile(packages={"brew": ["jq"], "apt": [], "apk": ["git"]}))
    assert [s.description for s in p.steps[1:]] == ["apk install git"]
    assert p.package_count == 1


def test_key_format_is_pinned() -> None:
    """CI prebuilds are found by key: the hashing must not drift between versions."""
    definition = {"kind": "setup", "command": "echo hé"}
    payload = '{"format":1,"parent":"","step":{"command":"echo hé","kind":"setup"}}'
    assert step_key("", definition) == hashlib.sha256(payload.encode()).hexdigest()
    assert step_key("a" * 64, definition) != step_key("", definition)


def test_format_version_is_in_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    before = plan(coopfile()).build_key
    monkeypatch.setattr(steps_mod, "STEP_FORMAT", 2)
    assert plan(coopfile()).build_key != before
