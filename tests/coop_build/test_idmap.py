"""Choosing and writing uid/gid maps: the pure parts against fixed text, writing for real."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from coop_build.errors import NamespaceError, ToolError
from coop_build.idmap import (
    IdMap,
    build_full_map,
    choose_idmap,
    format_map,
    parse_subid,
    write_idmap,
)
from support.procs import wait_for
from support.require import require

SUBID = """\
# comment
alice:100000:65536
1001:300000:1000
bob:200000:65536
broken line of someone else
alice:500000:10
"""


def test_parse_subid_by_name_and_uid() -> None:
    assert parse_subid(SUBID, names=("alice", "1001")) == [(100000, 65536), (300000, 1000),
                                                           (500000, 10)]
    assert parse_subid(SUBID, names=("bob", "1002")) == [(200000, 65536)]
    assert parse_subid(SUBID, names=("carol", "1003")) == []
    assert parse_subid("", names=("alice",)) == []


@pytest.mark.parametrize("line", ["alice:1:2:3", "alice:x:10", "alice:10", "alice:-5:10"])
def test_parse_subid_rejects_own_malformed_lines(line: str) -> None:
    with pytest.raises(NamespaceError, match=r"/etc/subuid:2: expected NAME:START:COUNT"):
        parse_subid(f"bob:1:1\n{line}\n", names=("alice",), source="/etc/subuid")


def test_build_full_map_stacks_ranges_and_skips_own_id() -> None:
    assert build_full_map(1000, [(100000, 65536), (500000, 10)]) == (
        (0, 1000, 1), (1, 100000, 65536), (65537, 500000, 10))
    assert build_full_map(100005, [(100000, 65536)]) == ((0, 100005, 1),)


def test_idmap_properties() -> None:
    single = IdMap.single(1000, 1001)
    assert not single.full
    assert single.host_uid(0) == 1000 and single.host_gid(0) == 1001
    assert single.host_uid(1) is None
    full = IdMap(uid_map=((0, 1000, 1), (1, 100000, 65536)), gid_map=((0, 1000, 1),))
    assert full.full
    assert full.host_uid(100) == 100099
    assert full.host_uid(65537) is None
    assert format_map(full.uid_map) == "0 1000 1\n1 100000 65536\n"


def write_subids(tmp_path: Path, text: str) -> tuple[Path, Path]:
    (tmp_path / "subuid").write_text(text)
    (tmp_path / "subgid").write_text(text)
    return tmp_path / "subuid", tmp_path / "subgid"


def test_choose_full_when_ranges_and_tools(tmp_path: Path) -> None:
    subuid, subgid = write_subids(tmp_path, SUBID)
    tools = tmp_path / "bin"
    tools.mkdir()
    for tool in ("newuidmap", "newgidmap"):
        (tools / tool).write_text("#!/bin/sh\n")
        (tools / tool).chmod(0o755)
    env = {"PATH": str(tools)}
    got = choose_idmap(uid=1001, gid=1001, user="alice", subuid_path=subuid,
                       subgid_path=subgid, environ=env)
    assert got.uid_map == ((0, 1001, 1), (1, 100000, 65536), (65537, 300000, 1000),
                           (66537, 500000, 10))
    assert got.gid_map == got.uid_map
    assert got.full
    # Forced single, no range, no tools, a missing file: single each time.
    single = IdMap.single(1001, 1001)
    assert choose_idmap(uid=1001, gid=1001, user="alice", subuid_path=subuid,
                        subgid_path=subgid, environ={**env, "COOP_IDMAP": "single"}) == single
    assert choose_idmap(uid=1001, gid=1001, user="carol", subuid_path=subuid,
                        subgid_path=subgid, environ={**env, "PATH": str(tools)}) != single
    assert choose_idmap(uid=1009, gid=1001, user="carol", subuid_path=subuid,
                        subgid_path=subgid, environ=env) == IdMap.single(1009, 1001)
    assert choose_idmap(uid=1001, gid=1001, user="alice", subuid_path=subuid,
                        subgid_path=subgid, environ={"PATH": str(tmp_path / "none")}) == single
    assert choose_idmap(uid=1001, gid=1001, user="alice", subuid_path=subuid,
                        subgid_path=tmp_path / "missing", environ=env) == single


def test_root_maps_to_coops_range_never_to_itself(tmp_path: Path) -> None:
    """Root's own entries are ignored; inside 0..65535 is coop's range (reserved here on
    first use), with no tools needed; COOP_IDMAP=single is inside 0 alone."""
    subuid, subgid = write_subids(tmp_path, "root:100000:65536\n")
    got = choose_idmap(uid=0, gid=0, user="root", subuid_path=subuid, subgid_path=subgid,
                       environ={"PATH": str(tmp_path / "none")})
    assert got.uid_map == got.gid_map == ((0, 1 << 30, 65536),)
    assert got.owner == (1 << 30, 1 << 30) and got.full
    assert subuid.read_text() == subgid.read_text() == (
        "root:100000:65536\ncoop:1073741824:65536\n")
    single = choose_idmap(uid=0, gid=0, subuid_path=subuid, subgid_path=subgid,
                          environ={"COOP_IDMAP": "single"})
    assert single == IdMap.single(1 << 30, 1 << 30)
    assert subuid.read_text().count("coop:") == 1  # reserved once


def test_root_uses_an_existing_coop_entry(tmp_path: Path) -> None:
    subuid, subgid = write_subids(tmp_path, "coop:2000000:65536\n")
    subgid.write_text("coop:3000000:100000\n")
    got = choose_idmap(uid=0, gid=0, subuid_path=subuid, subgid_path=subgid, environ={})
    assert got.uid_map == ((0, 2000000, 65536),)
    assert got.gid_map == ((0, 3000000, 65536),)


def test_bad_coop_idmap_value(tmp_path: Path) -> None:
    with pytest.raises(NamespaceError, match="COOP_IDMAP must be"):
        choose_idmap(uid=5, gid=5, environ={"COOP_IDMAP": "sometimes"})


def test_this_machine_choice() -> None:
    """Root maps to coop's range (never host 0); the test user is inside 0, with its
    range unless forced single."""
    got = choose_idmap()
    if os.geteuid() == 0:
        assert got.owner[0] >= 1 << 30 and got.owner[1] >= 1 << 30
        assert got.host_uid(65535) == got.owner[0] + 65535
    else:
        assert got.owner == (os.getuid(), os.getgid())
    if os.environ.get("COOP_IDMAP") == "single":
        assert not got.full


def start_userns_process() -> subprocess.Popen[bytes]:
    """A process sitting in a fresh user namespace with no maps yet (util-linux unshare)."""
    require(shutil.which("unshare") is not None, "util-linux unshare missing")
    proc = subprocess.Popen(["unshare", "--user", "cat"], stdin=subprocess.PIPE)
    own = os.readlink("/proc/self/ns/user")

    def entered() -> bool:
        try:
            return os.readlink(f"/proc/{proc.pid}/ns/user") != own and Path(
                f"/proc/{proc.pid}/cmdline").read_bytes().startswith(b"cat")
        except OSError:
            return False

    wait_for(entered, 10, "unshare --user to exec cat")
    return proc


def finish(proc: subprocess.Popen[bytes]) -> None:
    assert proc.stdin is not None
    proc.stdin.close()
    proc.wait(timeout=10)


def test_write_single_map_for_real() -> None:
    proc = start_userns_process()
    try:
        idmap = IdMap.single(os.getuid(), os.getgid())
        write_idmap(proc.pid, idmap)
        assert Path(f"/proc/{proc.pid}/uid_map").read_text().split() == [
            "0", str(os.getuid()), "1"]
        assert Path(f"/proc/{proc.pid}/gid_map").read_text().split() == [
            "0", str(os.getgid()), "1"]
        with pytest.raises(NamespaceError, match="cannot write"):
            write_idmap(proc.pid, idmap)  # maps can be written once only
    finally:
        finish(proc)


def test_write_full_map_for_real() -> None:
    idmap = choose_idmap()
    if os.geteuid() == 0:
        idmap = IdMap(uid_map=((0, 0, 1), (1, 300000, 65536)),
                      gid_map=((0, 0, 1), (1, 300000, 65536)))
    else:
        require(idmap.full, "this user has no subordinate id range (or COOP_IDMAP=single)")
    proc = start_userns_process()
    try:
        write_idmap(proc.pid, idmap)
        lines = Path(f"/proc/{proc.pid}/uid_map").read_text().splitlines()
        assert [tuple(int(v) for v in line.split()) for line in lines] == list(idmap.uid_map)
    finally:
        finish(proc)


def test_newuidmap_refusal_is_a_tool_error() -> None:
    if os.geteuid() == 0:
        pytest.skip("root writes maps itself")
    proc = start_userns_process()
    try:
        bogus = IdMap(uid_map=((0, os.getuid(), 1), (1, 10, 5)), gid_map=((0, os.getgid(), 1),
                                                                        (1, 10, 5)))
        with pytest.raises(ToolError) as info:
            write_idmap(proc.pid, bogus)
        assert info.value.tool == "newgidmap"
        assert info.value.stderr
    finally:
        finish(proc)


def test_roots_maps_are_judged_again_when_a_file_changes(tmp_path: Path) -> None:
    """Root's maps are kept between calls only while the files they were judged from
    stay as they were: an entry changed to one that may not be used is refused at once."""
    subuid, subgid = write_subids(tmp_path, "coop:2000000:65536\n")
    subgid.write_text("coop:2000000:65536\n")
    first = choose_idmap(uid=0, gid=0, subuid_path=subuid, subgid_path=subgid, environ={})
    assert first.uid_map == ((0, 2000000, 65536),)
    assert choose_idmap(uid=0, gid=0, subuid_path=subuid, subgid_path=subgid,
                        environ={}) == first
    subuid.write_text("coop:0:65536\n")  # host root: never usable
    with pytest.raises(NamespaceError, match="it starts at 0"):
        choose_idmap(uid=0, gid=0, subuid_path=subuid, subgid_path=subgid, environ={})
    replacement = tmp_path / "subuid.new"
    replacement.write_text("coop:3000000:65536\n")
    replacement.replace(subuid)
    got = choose_idmap(uid=0, gid=0, subuid_path=subuid, subgid_path=subgid, environ={})
    assert got.uid_map == ((0, 3000000, 65536),)
