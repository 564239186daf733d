"""Coopfile layers: golden error/warning lines, merge rules across all four layers, provenance."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from coop_build.envref import env_reference
from coop_build.errors import CoopfileError
from coop_build.layers import (
    LoadedCoopfile,
    expand_env,
    load_coopfile,
    merge_layers,
)

SECRET = "sk-ant-DO-NOT-LEAK-0123456789"
AGENT = '[agent]\ncommand = "claude"\n'
CMD = {"agent": {"command": "sh"}}


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An isolated HOME (also COOP_HOME, XDG_CONFIG_HOME unset) and a workspace as cwd."""
    home = tmp_path / "home"
    (home / ".config" / "coop").mkdir(parents=True)
    workspace = tmp_path / "ws"
    workspace.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("COOP_HOME", str(home / ".coop"))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.chdir(workspace)
    return home


def environ(home: Path, **extra: str) -> dict[str, str]:
    return {"HOME": str(home), **extra}


def global_file(home: Path) -> Path:
    return home / ".config" / "coop" / "default.toml"


def load_text(home: Path, text: str, **kwargs: Any) -> LoadedCoopfile:
    Path("coop.toml").write_text(text)
    env = kwargs.pop("environ", environ(home))
    return load_coopfile(environ=env, **kwargs)


def error_text(home: Path, text: str, **kwargs: Any) -> str:
    with pytest.raises(CoopfileError) as info:
        load_text(home, text, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    assert info.value.code == "INVALID_COOPFILE"
    return message


# (coop.toml text, the exact error line)
GOLDEN_ERRORS: list[tuple[str, str]] = [
    # unknown tables and keys, with "did you mean"
    (
        AGENT + '[netwrok]\nmode = "none"\n',
        "./coop.toml: [netwrok]: unknown table (did you mean [network]?)",
    ),
    (AGENT + "[zzz]\nx = 1\n", "./coop.toml: [zzz]: unknown table"),
    (
        '[agent]\ncomand = "claude"\n',
        './coop.toml: [agent].comand: unknown key (did you mean "command"?)',
    ),
    (AGENT + "[session]\nxyzzy = 1\n", "./coop.toml: [session].xyzzy: unknown key"),
    (
        AGENT + "[session]\nrestart_delay = 5\n",
        './coop.toml: [session].restart_delay: unknown key (did you mean "restart_delay_ms"?)',
    ),
    (
        'image = "alpine:3"\n' + AGENT,
        "./coop.toml: image: unknown key (did you mean [base].image?)",
    ),
    ('netwrk = "none"\n' + AGENT, "./coop.toml: netwrk: unknown key (did you mean [network]?)"),
    (AGENT + "[agent.extra]\nx = 1\n", "./coop.toml: [agent].extra: unknown key"),
    # wrong types
    (
        AGENT + '[session]\nrestart_delay_ms = "fast"\n',
        './coop.toml: [session].restart_delay_ms: must be an integer >= 0, got "fast"',
    ),
    (
        AGENT + "[session]\nrestart_delay_ms = -1\n",
        "./coop.toml: [session].restart_delay_ms: must be an integer >= 0, got -1",
    ),
    (
        AGENT + "[session]\nrestart_delay_ms = 1.5\n",
        "./coop.toml: [session].restart_delay_ms: must be an integer >= 0, got 1.5",
    ),
    (
        AGENT + "[session]\nrestart_delay_ms = true\n",
        "./coop.toml: [session].restart_delay_ms: must be an integer >= 0, got true",
    ),
    (
        AGENT + '[input_filter]\nctrl_c_debounce_ms = "x"\n',
        './coop.toml: [input_filter].ctrl_c_debounce_ms: must be an integer >= 0, got "x"',
    ),
    (
        AGENT + '[session]\nauto_restart = "yes"\n',
        './coop.toml: [session].auto_restart: must be true or false, got "yes"',
    ),
    (
        AGENT + '[session]\npersist = ".claude"\n',
        './coop.toml: [session].persist: must be a list of strings, got ".claude"',
    ),
    (
        AGENT + "[env]\n\"A B\" = 'v'\n",
        './coop.toml: [env]."A B": invalid variable name (letters, digits and _, not starting with a digit)',  # noqa: E501
    ),
    (AGENT + '[setup]\nrun = ["a", 3]\n', "./coop.toml: [setup].run[1]: must be a string, got 3"),
    (
        AGENT + '[setup]\nrun = ["a", ["b"]]\n',
        "./coop.toml: [setup].run[1]: must be a string, got a list",
    ),
    (
        '[agent]\ncommand = ["claude"]\n',
        "./coop.toml: [agent].command: must be a string, got a list",
    ),
    ('[agent]\ncommand = ""\n', "./coop.toml: [agent].command: must not be empty"),
    (
        AGENT + '[packages]\napk = "git"\n',
        './coop.toml: [packages].apk: must be a list of strings, got "git"',
    ),
    (
        AGENT + '[packages]\napk = ["git", ""]\n',
        "./coop.toml: [packages].apk[1]: must not be empty",
    ),
    ('packages = ["git"]\n' + AGENT, "./coop.toml: [packages]: must be a table, got a list"),
    ('network = "none"\n' + AGENT, './coop.toml: [network]: must be a table, got "none"'),
    (
        AGENT + "[base]\nimage = 1979-05-27\n",
        "./coop.toml: [base].image: must be a string, got a date or time",
    ),
    # values
    (
        AGENT + '[network]\nmode = "bridge"\n',
        './coop.toml: [network].mode: must be one of "none", "host", "veth", got "bridge"',
    ),
    (
        AGENT + '[network]\ninherit = ["proxy", "certs"]\n',
        './coop.toml: [network].inherit[1]: must be one of "proxy", "tls", got "certs"',
    ),
    (
        AGENT + '[network]\ninherit = "proxy"\n',
        './coop.toml: [network].inherit: must be a list of strings, got "proxy"',
    ),
    (
        AGENT + '[base]\nimage = "Alpine:3"\n',
        './coop.toml: [base].image: invalid image reference "Alpine:3": repository name must be lowercase',  # noqa: E501
    ),
    (
        AGENT + '[base]\nimage = "alpine:"\n',
        "./coop.toml: [base].image: invalid image reference \"alpine:\": tag must be 1-128 letters, digits, '_', '.' or '-', not starting with '.' or '-'",  # noqa: E501
    ),
    (
        AGENT + '[base]\nplatform = "arm64"\n',
        './coop.toml: [base].platform: must be os/arch[/variant] such as "linux/amd64", got "arm64"',  # noqa: E501
    ),
    (
        AGENT + '[workspace]\npath = "src"\n',
        './coop.toml: [workspace].path: must be an absolute path, got "src"',
    ),
    (
        AGENT + '[session]\npersist = [".claude", "../x"]\n',
        './coop.toml: [session].persist[1]: must not contain "..", got "../x"',
    ),
    (
        AGENT + "[input_filter]\nblock_sequences = ['\\q']\n",
        r'./coop.toml: [input_filter].block_sequences[0]: invalid escape "\q" (use \xNN, \r, \n, \t or \\)',  # noqa: E501
    ),
    (
        AGENT + '[build]\nprebuilt = "127.0.0.1:5000/ci/env:v1"\n',
        './coop.toml: [build].prebuilt: invalid image reference "127.0.0.1:5000/ci/env:v1": must name a repository without tag or digest',  # noqa: E501
    ),
    (
        AGENT + '[env]\nBAD-NAME = "v"\n',
        "./coop.toml: [env].BAD-NAME: invalid variable name (letters, digits and _, not starting with a digit)",  # noqa: E501
    ),
    (AGENT + "[env]\nPORT = 8080\n", "./coop.toml: [env].PORT: must be a string, got an integer"),
    # required after merging
    (
        "",
        "./coop.toml: [agent].command: required (set it in ./coop.toml or in ~/.config/coop/default.toml)",  # noqa: E501
    ),
    (
        '[agent]\nargs = ["-v"]\n',
        "./coop.toml: [agent].command: required (set it in ./coop.toml or in ~/.config/coop/default.toml)",  # noqa: E501
    ),
    # an unknown table is reported before the missing command it causes
    (
        '[agnet]\ncommand = "claude"\n',
        "./coop.toml: [agnet]: unknown table (did you mean [agent]?)",
    ),
    # invalid TOML, with line and column
    ("[agent]\ncommand = \n", "./coop.toml:2:11: invalid TOML: invalid value"),
    (
        '[agent]\ncommand = "claude"\n[session]\nrestart_delay_ms = = 3\n',
        "./coop.toml:4:20: invalid TOML: invalid value",
    ),
    (
        '[agent]\ncommand = "a"\ncommand = "b"\n',
        "./coop.toml:3:14: invalid TOML: cannot overwrite a value",
    ),
    (
        '[agent]\ncommand = "unterminated\n',
        "./coop.toml:2:24: invalid TOML: illegal character '\\n'",
    ),
    ("[agent\n", "./coop.toml:1:7: invalid TOML: expected ']' at the end of a table declaration"),
    (
        '[agent]\ncommand = "claude"\n[agent]\n',
        "./coop.toml:3:7: invalid TOML: cannot declare [agent] twice",
    ),
]


@pytest.mark.parametrize(
    ("text", "expected"), GOLDEN_ERRORS, ids=[e[:60] for _, e in GOLDEN_ERRORS]
)
def test_golden_errors(home: Path, text: str, expected: str) -> None:
    assert error_text(home, text) == expected


def test_not_utf8(home: Path) -> None:
    Path("coop.toml").write_bytes(b'[agent]\ncommand = "cl\xffaude"\n')
    with pytest.raises(CoopfileError) as info:
        load_coopfile(environ=environ(home))
    assert str(info.value) == "./coop.toml:2:14: invalid TOML: not UTF-8 text"


def test_unreadable_file(home: Path) -> None:
    Path("coop.toml").mkdir()
    with pytest.raises(CoopfileError) as info:
        load_coopfile(environ=environ(home))
    assert str(info.value) == "./coop.toml: cannot read: Is a directory"


def test_missing_explicit_path_is_an_error(home: Path) -> None:
    with pytest.raises(CoopfileError) as info:
        load_coopfile(Path("sub/coop.toml"), environ=environ(home))
    assert str(info.value) == "./sub/coop.toml: file not found"


def test_missing_workspace_file_is_fine_when_global_has_command(home: Path) -> None:
    global_file(home).write_text('[agent]\ncommand = "codex"\n')
    loaded = load_coopfile(environ=environ(home))
    assert loaded.path is None
    assert loaded.sources == (global_file(home),)
    assert loaded.coopfile.agent.command == "codex"
    assert loaded.warnings == ()


def test_missing_everything_names_both_files(home: Path) -> None:
    with pytest.raises(CoopfileError) as info:
        load_coopfile(environ=environ(home))
    assert str(info.value) == (
        "./coop.toml: [agent].command: required "
        "(set it in ./coop.toml or in ~/.config/coop/default.toml)"
    )


# --- which file a message names ----------------------------------------------------


def test_path_as_given_and_relative_to_cwd(home: Path) -> None:
    sub = Path("sub")
    sub.mkdir()
    (sub / "coop.toml").write_text("")
    loaded = load_coopfile(Path("sub/coop.toml"), environ=environ(home), overrides=CMD)
    assert loaded.path == Path.cwd() / "sub" / "coop.toml"  # absolute for the store
    assert loaded.sources == (loaded.path,)
    (sub / "coop.toml").write_text('[network]\nmode = "x"\n')
    expected = './sub/coop.toml: [network].mode: must be one of "none", "host", "veth", got "x"'
    for given in (Path("sub/coop.toml"), Path.cwd() / "sub" / "coop.toml"):
        with pytest.raises(CoopfileError) as info:
            load_coopfile(given, environ=environ(home))
        assert str(info.value) == expected
    with pytest.raises(CoopfileError) as info:
        load_coopfile(workspace=Path.cwd() / "sub", environ=environ(home))
    assert str(info.value) == expected


def test_path_outside_cwd_is_absolute(home: Path, tmp_path: Path) -> None:
    other = tmp_path / "elsewhere"
    other.mkdir()
    (other / "coop.toml").write_text("[oops]\n")
    with pytest.raises(CoopfileError) as info:
        load_coopfile(workspace=other, environ=environ(home))
    assert str(info.value) == f"{other}/coop.toml: [oops]: unknown table"


def test_path_under_home_uses_tilde(home: Path) -> None:
    project = home / "proj"
    project.mkdir()
    (project / "coop.toml").write_text("[oops]\n")
    with pytest.raises(CoopfileError) as info:
        load_coopfile(workspace=project, environ=environ(home))
    assert str(info.value) == "~/proj/coop.toml: [oops]: unknown table"


def test_global_path_follows_xdg_config_home(home: Path, tmp_path: Path) -> None:
    xdg = tmp_path / "xdg"
    (xdg / "coop").mkdir(parents=True)
    (xdg / "coop" / "default.toml").write_text('[agent]\ncommand = "aider"\n')
    global_file(home).write_text('[agent]\ncommand = "not-this-one"\n')
    loaded = load_text(home, "", environ=environ(home, XDG_CONFIG_HOME=str(xdg)))
    assert loaded.coopfile.agent.command == "aider"
    assert loaded.sources == (xdg / "coop" / "default.toml", Path.cwd() / "coop.toml")


def test_explicit_global_path(home: Path, tmp_path: Path) -> None:
    custom = tmp_path / "custom.toml"
    custom.write_text("[session]\nshell = 5\n")
    with pytest.raises(CoopfileError) as info:
        load_text(home, AGENT, global_path=custom)
    assert str(info.value) == f"{custom}: [session].shell: must be a string, got 5"
    with pytest.raises(CoopfileError) as info:
        load_text(home, "", global_path=tmp_path / "missing.toml")
    assert str(info.value) == (
        "./coop.toml: [agent].command: required "
        f"(set it in ./coop.toml or in {tmp_path}/missing.toml)"
    )


# --- merge rules across the four layers ---------------------------------------------

GLOBAL = """
[base]
image = "debian:12"
platform = "linux/amd64"

[packages]
apt = ["git", "curl"]
pip = ["httpie"]

[agent]
command = "claude"
args = ["--global-arg"]

[env]
EDITOR = "vi"
SHARED = "from-global"

[session]
persist = [".claude", ".cache"]
auto_restart = false
restart_delay_ms = 3000

[setup]
run = ["echo global-1", "echo global-2"]
"""

WORKSPACE = """
[packages]
pip = ["ruff"]
npm = ["typescript"]

[agent]
args = ["--ws-arg"]

[env]
SHARED = "from-workspace"
LOCAL = "x"

[session]
persist = [".config/gh"]
shell = "/bin/bash"

[setup]
run = ["echo ws"]

[network]
mode = "none"
"""


def test_four_layers_merge(home: Path) -> None:
    global_file(home).write_text(GLOBAL)
    overrides = {
        "network": {"mode": "host"},
        "env": {"LOCAL": "cli"},
        "session": {"restart_delay_ms": 0},
    }
    loaded = load_text(home, WORKSPACE, overrides=overrides)
    c = loaded.coopfile
    # global only
    assert c.base.image == "debian:12"
    assert c.base.platform == "linux/amd64"
    assert c.agent.command == "claude"
    assert c.session.auto_restart is False
    # defaults where no layer speaks
    assert c.workspace.path == "/workspace"
    assert c.input_filter.ctrl_c_debounce_ms == 500
    # maps merge key by key, later layer wins per key
    assert c.packages == {"apt": ["git", "curl"], "pip": ["ruff"], "npm": ["typescript"]}
    assert c.env == {"EDITOR": "vi", "SHARED": "from-workspace", "LOCAL": "cli"}
    # lists are replaced whole
    assert c.agent.args == ["--ws-arg"]
    assert c.session.persist == [".config/gh"]
    assert c.setup.run == ["echo ws"]
    # tables merge recursively; overrides win last
    assert c.session.shell == "/bin/bash"
    assert c.session.restart_delay_ms == 0
    assert c.network.mode == "host"
    assert loaded.path == Path.cwd() / "coop.toml"
    assert loaded.sources == (global_file(home), Path.cwd() / "coop.toml")
    assert overrides == {
        "network": {"mode": "host"},
        "env": {"LOCAL": "cli"},
        "session": {"restart_delay_ms": 0},
    }


def test_empty_list_in_later_layer_clears(home: Path) -> None:
    global_file(home).write_text(GLOBAL)
    c = load_text(
        home, "[packages]\napt = []\n[setup]\nrun = []\n[session]\npersist = []\n"
    ).coopfile
    assert c.packages["apt"] == []
    assert c.system_packages() == []
    assert c.setup.run == []
    assert c.session.persist == []


def test_overrides_alone(home: Path) -> None:
    loaded = load_coopfile(
        environ=environ(home), overrides={"agent": {"command": "bash"}, "network": {"mode": "none"}}
    )
    assert (loaded.coopfile.agent.command, loaded.coopfile.network.mode) == ("bash", "none")
    assert loaded.sources == ()
    assert loaded.path is None


def test_merge_layers_provenance() -> None:
    merged, provenance = merge_layers(
        [
            ("g", {"env": {"A": "1", "B": "2"}, "session": {"persist": ["x"], "shell": "/bin/sh"}}),
            ("w", {"env": {"B": "3"}, "session": {"persist": ["y"]}, "network": {"mode": "none"}}),
            ("cli", {"network": {"mode": "host"}}),
        ]
    )
    assert merged == {
        "env": {"A": "1", "B": "3"},
        "session": {"persist": ["y"], "shell": "/bin/sh"},
        "network": {"mode": "host"},
    }
    assert provenance == {
        ("env",): "w",
        ("env", "A"): "g",
        ("env", "B"): "w",
        ("session",): "w",
        ("session", "persist"): "w",
        ("session", "shell"): "g",
        ("network",): "cli",
        ("network", "mode"): "cli",
    }


def test_replacing_a_table_with_a_scalar_forgets_its_provenance() -> None:
    merged, provenance = merge_layers(
        [("g", {"network": {"mode": "none"}}), ("w", {"network": "x"})]
    )
    assert merged == {"network": "x"}
    assert provenance == {("network",): "w"}


# --- provenance in messages ---------------------------------------------------------


def test_error_in_global_names_global_file(home: Path) -> None:
    global_file(home).write_text('[network]\nmode = "bridge"\n')
    assert error_text(home, AGENT) == (
        '~/.config/coop/default.toml: [network].mode: must be one of "none", "host", "veth", '
        'got "bridge"'
    )


def test_unknown_key_in_global_names_global_file(home: Path) -> None:
    global_file(home).write_text("[agent]\ncomand = 'x'\n")
    assert error_text(home, AGENT) == (
        '~/.config/coop/default.toml: [agent].comand: unknown key (did you mean "command"?)'
    )


def test_invalid_toml_in_global(home: Path) -> None:
    global_file(home).write_text("[agent\n")
    assert error_text(home, AGENT) == (
        "~/.config/coop/default.toml:1:7: invalid TOML: "
        "expected ']' at the end of a table declaration"
    )


def test_bad_global_value_overridden_by_workspace_is_fine(home: Path) -> None:
    global_file(home).write_text('[network]\nmode = "bridge"\n[session]\npersist = "x"\n')
    c = load_text(home, AGENT + '[network]\nmode = "none"\n[session]\npersist = []\n').coopfile
    assert c.network.mode == "none"


def test_list_item_error_blames_the_layer_that_set_the_list(home: Path) -> None:
    global_file(home).write_text('[setup]\nrun = ["ok", 7]\n')
    assert (
        error_text(home, AGENT)
        == "~/.config/coop/default.toml: [setup].run[1]: must be a string, got 7"
    )
    assert load_text(home, AGENT + '[setup]\nrun = ["fine"]\n').coopfile.setup.run == ["fine"]


def test_error_in_overrides_names_the_command_line(home: Path) -> None:
    assert error_text(home, AGENT, overrides={"network": {"mode": "bridge"}}) == (
        'command line: [network].mode: must be one of "none", "host", "veth", got "bridge"'
    )


def test_env_key_error_blames_its_own_layer(home: Path) -> None:
    global_file(home).write_text('[env]\n"1BAD" = "v"\n')
    assert error_text(home, AGENT + '[env]\nGOOD = "v"\n').startswith(
        "~/.config/coop/default.toml: [env].1BAD: invalid variable name"
    )


# --- warnings -----------------------------------------------------------------------


def test_warnings_unset_env_and_unknown_manager(home: Path) -> None:
    global_file(home).write_text('[env]\nGH = "$GH_TOKEN"\n[packages]\nbrew = ["jq"]\n')
    text = (
        AGENT
        + '[env]\nAPI_KEY = "$ANTHROPIC_API_KEY"\nBRACED = "${OPENAI_API_KEY}"\n'
        + 'PRESENT = "$PRESENT_VAR"\nLITERAL = "$NOT_A_REF and more"\nPLAIN = "value"\n'
        + '[packages]\natp = ["git"]\napk = ["bash"]\n'
    )
    loaded = load_text(home, text, environ=environ(home, PRESENT_VAR=SECRET))
    assert loaded.warnings == (
        "~/.config/coop/default.toml: [packages].brew: unknown package manager "
        "(known: apk, apt, dnf, pacman, pip, npm)",
        './coop.toml: [packages].atp: unknown package manager (did you mean "apt"?)',
        "~/.config/coop/default.toml: [env].GH: $GH_TOKEN is not set in your environment",
        "./coop.toml: [env].API_KEY: $ANTHROPIC_API_KEY is not set in your environment",
        "./coop.toml: [env].BRACED: $OPENAI_API_KEY is not set in your environment",
    )
    # the model keeps the reference, never the value
    assert loaded.coopfile.env["PRESENT"] == "$PRESENT_VAR"
    assert SECRET not in repr(loaded)


def test_set_but_empty_variable_is_not_warned(home: Path) -> None:
    loaded = load_text(home, AGENT + '[env]\nK = "$EMPTY"\n', environ=environ(home, EMPTY=""))
    assert loaded.warnings == ()


@pytest.mark.parametrize(
    "table",
    [
        f'[env]\nKEY = ["{SECRET}"]\n',
        f'[env]\n"BAD NAME" = "{SECRET}"\n',
        f'[env]\nKEY = {{ v = "{SECRET}" }}\n',
        f'[env]\nKEY = "{SECRET}"\n[netwrok]\n',
    ],
)
def test_env_values_never_in_errors(home: Path, table: str) -> None:
    message = error_text(home, AGENT + table)
    assert SECRET not in message
    assert message.startswith("./coop.toml: [")


def test_env_value_of_wrong_type_shows_only_its_kind(home: Path) -> None:
    assert error_text(home, AGENT + f'[env]\nKEY = ["{SECRET}"]\n') == (
        "./coop.toml: [env].KEY: must be a string, got a list"
    )


# --- expand_env ---------------------------------------------------------------------


def test_expand_env() -> None:
    env = {
        "A": "$FROM_HOST",
        "B": "${FROM_HOST}",
        "C": "$UNSET",
        "D": "literal",
        "E": "$FROM_HOST/suffix",
        "F": "${FROM_HOST",
        "G": "$$FROM_HOST",
        "H": "",
        "I": "$1X",
    }
    assert expand_env(env, {"FROM_HOST": SECRET}) == {
        "A": SECRET,
        "B": SECRET,
        "C": "",
        "D": "literal",
        "E": "$FROM_HOST/suffix",
        "F": "${FROM_HOST",
        "G": "$$FROM_HOST",
        "H": "",
        "I": "$1X",
    }
    assert env["A"] == "$FROM_HOST"  # the input is not modified


def test_env_reference() -> None:
    assert env_reference("$A_1") == "A_1"
    assert env_reference("${_b}") == "_b"
    assert env_reference("$") is None
    assert env_reference("${}") is None
    assert env_reference(" $A") is None
    assert env_reference(["$A"]) is None  # raw TOML data: only a string is a reference


def test_every_layer_is_kept_as_read_with_its_bytes_digest(home: Path) -> None:
    """The trust check weighs the workspace's layer apart from the user's own: each is
    kept as parsed, a file's with the sha256 of exactly the bytes that were parsed."""
    text = AGENT + '[network]\nmode = "host"\n'
    global_file(home).write_bytes(b'[env]\nA = "$X"\n')
    loaded = load_text(home, text, overrides={"session": {"shell": "/bin/bash"}})
    assert [layer.kind for layer in loaded.layers] == ["global", "workspace", "overrides"]
    workspace = loaded.layer("workspace")
    assert workspace is not None and workspace.path == Path.cwd() / "coop.toml"
    assert workspace.data == {"agent": {"command": "claude"}, "network": {"mode": "host"}}
    assert workspace.sha256 == hashlib.sha256(text.encode()).hexdigest()
    overrides = loaded.layer("overrides")
    assert overrides is not None and (overrides.path, overrides.sha256) == (None, None)
    assert overrides.data == {"session": {"shell": "/bin/bash"}}
    global_file(home).unlink()
    only = load_text(home, text)
    assert [layer.kind for layer in only.layers] == ["workspace"]
    assert only.layer("global") is None
