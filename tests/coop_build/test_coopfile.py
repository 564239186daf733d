"""The Coopfile models: SPEC 2 defaults, value rules, package ordering, escapes."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from coop_build.coopfile import (
    KNOWN_MANAGERS,
    Coopfile,
    decode_block_sequence,
)
from coop_build.reference import Reference


def make(**tables: Any) -> Coopfile:
    data: dict[str, Any] = {"agent": {"command": "claude"}}
    data.update(tables)
    return Coopfile.model_validate(data)


def error_of(**tables: Any) -> tuple[tuple[str | int, ...], str, str]:
    """(loc, type, msg) of the single error validating these tables."""
    with pytest.raises(ValidationError) as info:
        make(**tables)
    errors = info.value.errors()
    assert len(errors) == 1, errors
    return errors[0]["loc"], errors[0]["type"], errors[0]["msg"]


def test_defaults_match_spec_table() -> None:
    c = make()
    assert c.base.image == "alpine:3"
    assert c.base.platform is None
    assert c.packages == {}
    assert c.setup.run == []
    assert c.agent.command == "claude"
    assert c.agent.args == []
    assert c.agent.install is None
    assert c.workspace.mount == "."
    assert c.workspace.path == "/workspace"
    assert c.env == {}
    assert c.network.mode == "veth"
    assert c.session.persist == [".claude"]
    assert c.session.auto_restart is True
    assert c.session.restart_delay_ms == 1000
    assert c.session.shell == "/bin/sh"
    assert c.input_filter.ctrl_c_debounce_ms == 500
    assert c.input_filter.block_sequences == []
    assert c.build.prebuilt is None
    assert c.package_count == 0


def test_default_lists_are_not_shared() -> None:
    a, b = make(), make()
    assert a.session.persist is not b.session.persist
    assert a.setup.run is not b.setup.run


def test_agent_command_is_required() -> None:
    with pytest.raises(ValidationError) as info:
        Coopfile.model_validate({})
    assert [(e["loc"], e["type"]) for e in info.value.errors()] == [(("agent",), "missing")]
    assert error_of(agent={"args": ["x"]})[:2] == (("agent", "command"), "missing")
    assert error_of(agent={"command": ""})[:2] == (("agent", "command"), "string_too_short")


def test_models_are_frozen() -> None:
    c = make()
    with pytest.raises(ValidationError):
        c.network = c.network
    with pytest.raises(ValidationError):
        c.session.shell = "/bin/bash"


def test_unknown_keys_are_forbidden_everywhere() -> None:
    assert error_of(netwrok={"mode": "none"})[:2] == (("netwrok",), "extra_forbidden")
    assert error_of(session={"persit": []})[:2] == (("session", "persit"), "extra_forbidden")
    assert error_of(build={"prebuild": "x"})[:2] == (("build", "prebuild"), "extra_forbidden")


def test_strict_types_are_not_coerced() -> None:
    assert error_of(session={"restart_delay_ms": "1000"})[:2] == (
        ("session", "restart_delay_ms"),
        "int_type",
    )
    assert error_of(session={"auto_restart": 1})[:2] == (("session", "auto_restart"), "bool_type")
    assert error_of(session={"restart_delay_ms": True})[:2] == (
        ("session", "restart_delay_ms"),
        "int_type",
    )
    assert error_of(agent={"command": "x", "args": "a b"})[:2] == (("agent", "args"), "list_type")
    assert error_of(env={"A": 1})[:2] == (("env", "A"), "string_type")


def test_integer_bounds() -> None:
    assert make(session={"restart_delay_ms": 0}).session.restart_delay_ms == 0
    assert error_of(session={"restart_delay_ms": -1})[:2] == (
        ("session", "restart_delay_ms"),
        "greater_than_equal",
    )
    assert error_of(input_filter={"ctrl_c_debounce_ms": -5})[:2] == (
        ("input_filter", "ctrl_c_debounce_ms"),
        "greater_than_equal",
    )


@pytest.mark.parametrize("mode", ["veth", "none", "host"])
def test_network_modes(mode: str) -> None:
    assert make(network={"mode": mode}).network.mode == mode


def test_bad_network_mode() -> None:
    assert error_of(network={"mode": "bridge"})[:2] == (("network", "mode"), "literal_error")


def test_network_inherit_defaults_by_mode_and_as_written() -> None:
    """Unset: proxies and TLS trust for veth and host, nothing for none; a list replaces
    the default (an empty one inherits nothing), in a fixed order, once each."""
    assert make().network.inherited == ("proxy", "tls")
    assert make(network={"mode": "host"}).network.inherited == ("proxy", "tls")
    assert make(network={"mode": "none"}).network.inherited == ()
    assert make(network={"inherit": []}).network.inherited == ()
    assert make(network={"inherit": ["tls", "proxy", "tls"]}).network.inherited == \
        ("proxy", "tls")
    assert make(network={"mode": "none", "inherit": ["tls"]}).network.inherited == ("tls",)


def test_bad_network_inherit() -> None:
    assert error_of(network={"inherit": ["proxy", "dns"]})[:2] == \
        (("network", "inherit", 1), "literal_error")
    assert error_of(network={"inherit": "proxy"})[:2] == (("network", "inherit"), "list_type")


def test_base_image_host_and_references() -> None:
    host = make(base={"image": "host"})
    assert host.base.is_host
    assert host.base.reference is None
    c = make(base={"image": "node:22-alpine"})
    assert not c.base.is_host
    assert c.base.reference == Reference("registry-1.docker.io", "library/node", "22-alpine", None)
    assert c.base.image == "node:22-alpine"  # kept as written: the step key uses it
    loc, kind, msg = error_of(base={"image": "Alpine:3"})
    assert (loc, kind) == (("base", "image"), "value_error")
    assert msg.endswith('invalid image reference "Alpine:3": repository name must be lowercase')


@pytest.mark.parametrize("platform", ["linux/amd64", "linux/arm64/v8", "linux/arm/v7", "linux/386"])
def test_valid_platforms(platform: str) -> None:
    assert make(base={"platform": platform}).base.platform == platform


@pytest.mark.parametrize(
    "platform", ["amd64", "linux/", "/amd64", "linux/amd64/v8/x", "Linux/AMD64", ""]
)
def test_invalid_platforms(platform: str) -> None:
    loc, kind, msg = error_of(base={"platform": platform})
    assert (loc, kind) == (("base", "platform"), "value_error")
    assert 'must be os/arch[/variant] such as "linux/amd64"' in msg


def test_workspace_path_must_be_absolute() -> None:
    assert make(workspace={"path": "/src"}).workspace.path == "/src"
    loc, _, msg = error_of(workspace={"path": "src"})
    assert loc == ("workspace", "path")
    assert msg.endswith('must be an absolute path, got "src"')


@pytest.mark.parametrize("good", [".claude", ".config/gh", "data", "./x"])
def test_persist_accepts_relative_dirs(good: str) -> None:
    assert make(session={"persist": [good]}).session.persist == [good]


@pytest.mark.parametrize(
    ("bad", "problem"),
    [
        ("/root/.claude", 'must be a path relative to the sandbox home, got "/root/.claude"'),
        ("../etc", 'must not contain "..", got "../etc"'),
        (".a/../../b", 'must not contain "..", got ".a/../../b"'),
        ("", 'must name a directory under the sandbox home, got ""'),
        (".", 'must name a directory under the sandbox home, got "."'),
        ("./", 'must name a directory under the sandbox home, got "./"'),
    ],
)
def test_persist_rejects(bad: str, problem: str) -> None:
    loc, _, msg = error_of(session={"persist": [".ok", bad]})
    assert loc == ("session", "persist", 1)
    assert msg.endswith(problem)


def test_package_ordering_and_count() -> None:
    c = make(
        packages={
            "npm": ["@anthropic-ai/claude-code"],
            "brew": ["jq"],
            "pip": ["aider-chat", "ruff"],
            "apt": ["git", "curl"],
            "cargo": ["ripgrep"],
            "apk": ["bash"],
            "dnf": [],
        }
    )
    assert c.system_packages() == [("apk", ["bash"]), ("apt", ["git", "curl"])]
    assert c.language_packages() == [
        ("pip", ["aider-chat", "ruff"]),
        ("npm", ["@anthropic-ai/claude-code"]),
        ("brew", ["jq"]),
        ("cargo", ["ripgrep"]),
    ]
    assert c.unknown_package_managers() == ["brew", "cargo"]
    assert c.package_count == 8
    assert set(KNOWN_MANAGERS) == {"apk", "apt", "dnf", "pacman", "pip", "npm"}


def test_package_names_must_be_nonempty_strings() -> None:
    assert error_of(packages={"apk": ["git", ""]})[:2] == (
        ("packages", "apk", 1),
        "string_too_short",
    )
    assert error_of(packages={"apk": "git"})[:2] == (("packages", "apk"), "list_type")


def test_env_names() -> None:
    assert make(env={"API_KEY": "$X", "_a1": "v"}).env == {"API_KEY": "$X", "_a1": "v"}
    for bad in ("1A", "A-B", "", "A B", "A=B"):
        loc, kind, _ = error_of(env={bad: "v"})
        assert loc == ("env", bad, "[key]")
        assert kind == "string_pattern_mismatch"


@pytest.mark.parametrize(
    ("text", "decoded"),
    [
        ("exit", b"exit"),
        (r"\x03", b"\x03"),
        (r"\x1b[A", b"\x1b[A"),
        (r"\xfF", b"\xff"),
        (r"rm -rf /\r", b"rm -rf /\r"),
        (r"a\nb\tc", b"a\nb\tc"),
        ("\\\\", b"\\"),
        (r"\\x03", b"\\x03"),
        ("é", "é".encode()),
        ("\x04", b"\x04"),  # a real control character (TOML "\u0004") stands for itself
    ],
)
def test_decode_block_sequence(text: str, decoded: bytes) -> None:
    assert decode_block_sequence(text) == decoded


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (r"\q", r'invalid escape "\q" (use \xNN, \r, \n, \t or \\)'),
        (r"\x3", r'invalid escape "\x3": \x needs two hex digits'),
        (r"\xzz", r'invalid escape "\xzz": \x needs two hex digits'),
        (r"\x", r'invalid escape "\x": \x needs two hex digits'),
        ("abc\\", r'ends with a lone "\" (write \\ for a backslash)'),
        ("", "must not be empty"),
    ],
)
def test_decode_block_sequence_errors(text: str, problem: str) -> None:
    with pytest.raises(ValueError) as info:
        decode_block_sequence(text)
    assert str(info.value) == problem


def test_block_sequences_validated_in_model() -> None:
    c = make(input_filter={"block_sequences": [r"\x1b\x1b", "q\\n"]})
    assert c.input_filter.blocked_bytes() == [b"\x1b\x1b", b"q\n"]
    loc, kind, _ = error_of(input_filter={"block_sequences": ["ok", r"\q"]})
    assert (loc, kind) == (("input_filter", "block_sequences", 1), "value_error")


def test_build_prebuilt() -> None:
    c = make(build={"prebuilt": "127.0.0.1:5000/ci/env"})
    repo = c.build.prebuilt_repository
    assert repo is not None
    assert str(repo.with_tag("key")) == "127.0.0.1:5000/ci/env:key"
    assert make().build.prebuilt_repository is None
    loc, _, msg = error_of(build={"prebuilt": "127.0.0.1:5000/ci/env:v1"})
    assert loc == ("build", "prebuilt")
    assert msg.endswith("must name a repository without tag or digest")


def test_setup_and_agent() -> None:
    c = make(
        setup={"run": ["echo a", "echo b"]},
        agent={"command": "aider", "args": ["--yes"], "install": "pip install aider-chat"},
    )
    assert c.setup.run == ["echo a", "echo b"]
    assert (c.agent.command, c.agent.args, c.agent.install) == (
        "aider",
        ["--yes"],
        "pip install aider-chat",
    )
    assert error_of(setup={"run": ["ok", ""]})[:2] == (("setup", "run", 1), "string_too_short")
