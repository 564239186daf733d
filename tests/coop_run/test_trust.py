"""What a workspace Coopfile asks beyond the defaults (pure), and the trust store.

No processes: layer data in, asks out (only paths are resolved); the store is a file
under a test ``COOP_HOME``. The real CLI and daemon are in
``tests/coop_run/sessions/test_escape_coopfile.py``.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from coop_build.paths import CoopPaths
from coop_run.layout import RunLayout
from coop_run.trust import (
    Ask,
    TrustStore,
    explain,
    mount_refusal,
    refusal_message,
    resolve_mount,
    trust_key,
    what_it_asks,
)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """``start`` (where coop runs) with a subdirectory, beside ``outside``; symlinks to
    each from inside ``start``."""
    (tmp_path / "start" / "sub").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    (tmp_path / "start" / "to-outside").symlink_to("../outside")
    (tmp_path / "start" / "to-sub").symlink_to("sub")
    return tmp_path


def mount(value: str) -> dict[str, Any]:
    return {"workspace": {"mount": value}}


def asks(tree: Path, workspace: dict[str, Any], **layers: Any) -> list[Ask]:
    return what_it_asks(workspace, start=tree / "start", **layers)


@pytest.mark.parametrize("value", [".", "sub", "./sub/", "to-sub", "sub/..", "START",
                                   "START/sub",
                                   "to-outside/../start"])  # the symlink, then ".."
def test_a_mount_inside_the_start_directory_asks_nothing(tree: Path, value: str) -> None:
    value = value.replace("START", str(tree / "start"))
    assert asks(tree, mount(value)) == []


@pytest.mark.parametrize(("value", "target"), [
    ("..", ""),
    ("../outside", "outside"),
    ("OUTSIDE", "outside"),     # absolute
    ("to-outside", "outside"),  # a symlink in the workspace, followed
    ("/", "/"),
])
def test_a_mount_outside_asks_with_its_real_path(tree: Path, value: str, target: str) -> None:
    value = value.replace("OUTSIDE", str(tree / "outside"))
    expected = os.path.realpath(tree / target)
    assert asks(tree, mount(value)) == [Ask("mount", "[workspace].mount", value, expected)]


def test_the_start_directory_is_taken_by_its_real_path(tree: Path) -> None:
    (tree / "link-to-start").symlink_to("start")
    assert what_it_asks(mount("."), start=tree / "link-to-start") == []
    assert what_it_asks(mount("sub"), start=tree / "link-to-start") == []
    found = what_it_asks(mount("../outside"), start=tree / "link-to-start")
    assert [a.target for a in found] == [str(tree / "outside")]


def test_the_mount_resolved_once_is_the_one_judged(tree: Path) -> None:
    """The daemon resolves the mount once and passes it: a symlink changed since (here
    ``to-sub`` now leading outside) changes nothing of what is judged, nor of what is
    refused, and the path judged is the one it sends."""
    resolved = resolve_mount(tree / "start", "to-sub")
    (tree / "start" / "to-sub").unlink()
    (tree / "start" / "to-sub").symlink_to("/etc")
    assert what_it_asks(mount("to-sub"), start=tree / "start", mount=resolved) == []
    assert mount_refusal(tree / "start", "to-sub", tree / "home", resolved=resolved) is None
    assert mount_refusal(tree / "start", "to-sub", tree / "home") is not None
    outside = resolve_mount(tree / "start", "to-outside")
    found = what_it_asks(mount("to-sub"), start=tree / "start", mount=outside)
    assert found == [Ask("mount", "[workspace].mount", "to-sub", str(tree / "outside"))]


def test_host_network_asks_unless_the_users_own_layers_give_it(tree: Path) -> None:
    host = {"network": {"mode": "host"}}
    assert asks(tree, host) == [Ask("network", "[network].mode", "host", "host")]
    assert asks(tree, {"network": {"mode": "none"}}) == []
    assert asks(tree, {}, below=host) == []          # the global layer's own choice
    assert asks(tree, host, below=host) == []        # repeating it asks nothing
    assert asks(tree, host, above={"network": {"mode": "veth"}}) == []  # a CLI flag wins
    assert asks(tree, host, below={"network": {"mode": "none"}}) != []


def test_inherit_asks_only_beyond_what_the_users_own_layers_give(tree: Path) -> None:
    """The mode's default (proxy and tls for veth and host, nothing for none) is no
    widening; a workspace that names more than the default, or than the user's own
    list, asks for each item (the proxy variables may carry a password)."""
    both = {"network": {"inherit": ["proxy", "tls"]}}
    assert asks(tree, both) == []                                   # veth's default
    assert asks(tree, {"network": {"inherit": []}}) == []            # narrowing
    assert asks(tree, {"network": {"mode": "none", "inherit": ["proxy", "tls", "proxy"]}}) == [
        Ask("inherit", "[network].inherit", "proxy", "proxy"),
        Ask("inherit", "[network].inherit", "tls", "tls")]
    # a user who turned it off: the workspace turning it back on asks
    off = {"network": {"inherit": []}}
    assert asks(tree, both, below=off) == [
        Ask("inherit", "[network].inherit", "proxy", "proxy"),
        Ask("inherit", "[network].inherit", "tls", "tls")]
    assert asks(tree, both, below={"network": {"inherit": ["tls"]}}) == [
        Ask("inherit", "[network].inherit", "proxy", "proxy")]
    assert asks(tree, both, above=off) == []          # a flag's list wins
    assert asks(tree, {}, below=both) == []           # the user's own choice
    # the user's none mode: a workspace that only names the list asks
    assert [a.target for a in asks(tree, {"network": {"inherit": ["proxy"]}},
                                   below={"network": {"mode": "none"}})] == ["proxy"]
    # the user's none mode: a workspace that only switches to veth turns on veth's
    # default inheritance, which the user's own mode withheld
    assert [a.target for a in asks(tree, {"network": {"mode": "veth"}},
                                   below={"network": {"mode": "none"}})] == ["proxy", "tls"]
    assert asks(tree, {"network": {"mode": "veth", "inherit": []}},
                below={"network": {"mode": "none"}}) == []
    [proxy] = asks(tree, {"network": {"mode": "none", "inherit": ["proxy"]}})
    assert proxy.grant == "inherit proxy"
    assert proxy.line == ('[network].inherit = "proxy": passes your proxy variables (with '
                          "any user:password in them) into the session")
    assert proxy.short == "your proxy settings"


def test_every_variable_from_the_environment_is_asked_by_name(tree: Path) -> None:
    env = {"env": {"TOKEN": "$AWS_SECRET_ACCESS_KEY", "B": "${HOME}", "PLAIN": "literal",
                   "NOT": "$AWS/suffix"}}
    assert asks(tree, env) == [
        Ask("env", "[env].TOKEN", "$AWS_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY"),
        Ask("env", "[env].B", "${HOME}", "HOME"),
    ]
    # what the user's own layers pass already is theirs, under any key
    assert asks(tree, env, below={"env": {"MINE": "$HOME"}}) == [
        Ask("env", "[env].TOKEN", "$AWS_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY")]
    # an override of the key replaces the workspace's value: nothing of it is asked
    assert [a.key for a in asks(tree, env, above={"env": {"TOKEN": "x"}})] == ["[env].B"]


def test_the_global_layer_asking_everything_needs_no_trust(tree: Path) -> None:
    everything = {"workspace": {"mount": str(tree / "outside")},
                  "network": {"mode": "host"}, "env": {"K": "$SECRET"}}
    assert asks(tree, {"agent": {"command": "sh"}}, below=everything) == []
    assert asks(tree, everything, below=everything) == []
    assert len(asks(tree, everything)) == 3


def test_lines_say_everything_on_one_line_and_escape_what_a_terminal_acts_on(
        tree: Path) -> None:
    found = asks(tree, {"workspace": {"mount": "../outside"}, "network": {"mode": "host"},
                        "env": {"TOKEN": "$AWS_KEY"}})
    lines = explain("./coop.toml", found)
    assert lines == [
        "./coop.toml asks for more than coop's defaults:",
        f'  [workspace].mount = "../outside": binds {tree / "outside"} into the session '
        "read-write (outside the workspace directory)",
        '  [network].mode = "host": shares the host\'s network (its addresses, its loopback '
        "services and its abstract Unix sockets)",
        '  [env].TOKEN = "$AWS_KEY": passes $AWS_KEY from your environment into the session',
    ]
    hostile = "../outside\x1b[2J\u202e\n"
    (tree / "outside\x1b[2J\u202e\n").mkdir()
    [ask] = asks(tree, mount(hostile))
    assert "\x1b" not in ask.line and "\u202e" not in ask.line and "\n" not in ask.line
    assert "\\u001b[2J\\u202e\\n" in ask.line
    assert "\x1b" not in ask.short


def test_the_refusal_is_one_line_naming_coop_trust(tree: Path) -> None:
    found = [Ask("mount", "[workspace].mount", "..", "/home/u"),
             Ask("network", "[network].mode", "host", "host"),
             Ask("env", "[env].T", "$AWS_KEY", "AWS_KEY")]
    assert refusal_message("/w/coop.toml", "./coop.toml", found) == (
        "./coop.toml is not trusted: it asks for the mount of /home/u, the host's network, "
        "$AWS_KEY; to allow that, run: coop trust ./coop.toml")
    spaced = refusal_message("/my dir/coop.toml", "~/my dir/coop.toml", found[1:2])
    assert spaced.endswith("run: coop trust '/my dir/coop.toml'")


def test_mounts_refused_whoever_asks(tree: Path) -> None:
    home = tree / "coop-home"
    for value in ("/etc", "/etc/ssh", "/", "/proc/self", str(home), "../coop-home"):
        line = mount_refusal(tree / "start", value, home)
        assert line is not None and line.startswith(f"[workspace].mount = {value!r}: "), value
    assert mount_refusal(tree / "start", "../outside", home) is None
    assert resolve_mount(tree / "start", "to-outside") == tree / "outside"


def test_a_trust_is_for_the_files_place_not_where_a_symlink_leads(tree: Path) -> None:
    (tree / "link-to-start").symlink_to("start")
    real = str(tree / "start" / "coop.toml")
    assert trust_key(tree / "link-to-start" / "coop.toml") == real
    (tree / "start" / "coop.toml").symlink_to(tree / "outside" / "coop.toml")
    assert trust_key(tree / "start" / "coop.toml") == real


# --- the store ---------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> TrustStore:
    return TrustStore(RunLayout(CoopPaths(tmp_path / "coop-home")))


HOST = [Ask("network", "[network].mode", "host", "host")]
MOUNT = [Ask("mount", "[workspace].mount", "..", "/somewhere")]


def digest(text: bytes) -> str:
    return hashlib.sha256(text).hexdigest()


def test_trusted_bytes_only(store: TrustStore, tree: Path) -> None:
    file = tree / "start" / "coop.toml"
    one = digest(b"a")
    assert not store.trusts(file, one, HOST)
    store.trust(file, one, HOST)
    assert store.trusts(file, one, HOST)
    assert store.trusts(file, one, [])
    assert not store.trusts(file, digest(b"b"), HOST)  # other bytes: not trusted
    assert not store.trusts(file, one, HOST + MOUNT)  # asks for more than was granted
    assert not store.trusts(tree / "outside" / "coop.toml", one, HOST)
    store.trust(file, digest(b"b"), HOST)  # a new trust replaces the old one
    assert not store.trusts(file, one, HOST)
    assert store.trusts(file, digest(b"b"), HOST)


def test_the_store_is_one_private_file_written_whole(store: TrustStore, tree: Path) -> None:
    store.trust(tree / "start" / "coop.toml", digest(b"a"), HOST + MOUNT)
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.home.stat().st_mode) == 0o700
    data = json.loads(store.path.read_text())
    assert data["version"] == 1
    entry = data["files"][str(tree / "start" / "coop.toml")]
    assert (entry["sha256"], entry["grants"]) == (digest(b"a"),
                                                  ["mount /somewhere", "network host"])
    assert sorted(p.name for p in store.home.iterdir()) == ["trust.json", "trust.lock"]


def test_revoke(store: TrustStore, tree: Path) -> None:
    file = tree / "start" / "coop.toml"
    assert store.revoke(file) is False
    store.trust(file, digest(b"a"), HOST)
    store.trust(tree / "other.toml", digest(b"a"), HOST)
    assert store.revoke(file) is True
    assert not store.trusts(file, digest(b"a"), HOST)
    assert store.trusts(tree / "other.toml", digest(b"a"), HOST)


@pytest.mark.parametrize("content", ["not json", "[]", '{"version": 2, "files": {}}',
                                     '{"version": 1, "files": []}'])
def test_a_store_it_cannot_read_trusts_nothing(store: TrustStore, tree: Path,
                                               content: str) -> None:
    file = tree / "start" / "coop.toml"
    store.trust(file, digest(b"a"), HOST)
    store.path.write_text(content)
    assert not store.trusts(file, digest(b"a"), HOST)
    store.trust(file, digest(b"a"), HOST)  # and a new trust starts it afresh
    assert store.trusts(file, digest(b"a"), HOST)


def test_a_tampered_entry_trusts_nothing(store: TrustStore, tree: Path) -> None:
    file = tree / "start" / "coop.toml"
    key = str(file)
    for entry in ({"sha256": digest(b"a")}, {"sha256": digest(b"a"), "grants": "network host"},
                  "yes"):
        store.path.parent.mkdir(parents=True, exist_ok=True)
        store.path.write_text(json.dumps({"version": 1, "files": {key: entry}}))
        assert not store.trusts(file, digest(b"a"), HOST), entry
