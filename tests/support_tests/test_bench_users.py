"""The test user's subordinate id ranges."""

from __future__ import annotations

import os
import pwd
from pathlib import Path

import pytest

from support.require import require
from support.users import (
    RANGE_COUNT,
    TEST_USER,
    UserSetupError,
    ensure_test_user,
    parse_subid,
    pick_range,
)


def test_parse_subid_skips_junk() -> None:
    text = "alice:100000:65536\n# comment\nbroken\nbob:165536:65536\n\n"
    assert parse_subid(text) == [("alice", 100000, 65536), ("bob", 165536, 65536)]


@pytest.mark.parametrize(("entries", "expected"), [
    ([], 200_000),
    ([("a", 100_000, 65_536)], 200_000),
    ([("a", 200_000, 65_536)], 265_536),
    ([("a", 150_000, 65_536), ("b", 300_000, 10)], 215_536),
    ([("a", 270_000, 10)], 200_000),
    ([("a", 260_000, 10)], 260_010),
])
def test_pick_range_avoids_overlaps(entries: list[tuple[str, int, int]], expected: int) -> None:
    assert pick_range(entries) == expected


def test_the_test_user_has_a_range_and_root_has_none() -> None:
    subuid = parse_subid(Path("/etc/subuid").read_text())
    assert not [e for e in subuid if e[0] in ("root", "0")]
    try:
        pwd.getpwnam(TEST_USER)
    except KeyError:
        require(False, f"{TEST_USER} not created yet (scripts/pytest-as-user creates it)")
    assert [e for e in subuid if e[0] == TEST_USER and e[2] >= RANGE_COUNT]


@pytest.mark.rootonly
def test_ensure_test_user_adds_a_range_once(tmp_path: Path) -> None:
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "subuid").write_text("someone:200000:65536")  # no final newline
    user = ensure_test_user(etc=etc)
    assert user.subuid == (265_536, RANGE_COUNT)
    assert user.subgid == (200_000, RANGE_COUNT)
    again = ensure_test_user(etc=etc)
    assert again == user
    assert (etc / "subuid").read_text() == (
        f"someone:200000:65536\n{TEST_USER}:265536:65536\n")
    assert (etc / "subuid").stat().st_mode & 0o777 == 0o644


def test_a_user_cannot_add_ranges(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("as root the range is added instead")
    with pytest.raises(UserSetupError, match="run as root"):
        ensure_test_user(pwd.getpwuid(os.getuid()).pw_name, etc=tmp_path)
