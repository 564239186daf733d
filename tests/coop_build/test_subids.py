"""coop's own id range (``coop_build.subids``): the pure parts against fixed text, the
reservation against files of the test's own."""

from __future__ import annotations

import pwd
import threading
from pathlib import Path

import pytest

from coop_build import subids
from coop_build.errors import NamespaceError
from coop_build.subids import (
    BLOCK,
    FLOOR,
    coop_ranges,
    entry_line,
    own_range,
    parse_entries,
    parse_id_map,
    pick_block,
    range_refusal,
)

SUBID = """\
# comment
cooptest:100000:65536
broken line
coop:x:5
coop:0:0
coop:1073872896:65536
coop:5:5
"""


def test_parse_entries_skips_what_is_not_an_entry() -> None:
    assert parse_entries(SUBID) == [("cooptest", 100000, 65536), ("coop", 0, 0),
                                    ("coop", 1073872896, 65536), ("coop", 5, 5)]
    assert own_range(parse_entries(SUBID)) == (1073872896, 65536)  # empty ranges skipped
    assert own_range(parse_entries("cooptest:100000:65536\n")) is None


def test_pick_block_is_the_first_free_aligned_block_at_or_above_the_floor() -> None:
    assert pick_block([]) == FLOOR
    assert pick_block([(100000, 65536)]) == FLOOR
    assert pick_block([(FLOOR, 1)]) == FLOOR + BLOCK
    # A range straddling two blocks takes both; the next free one is aligned.
    assert pick_block([(FLOOR + 10, BLOCK)]) == FLOOR + 2 * BLOCK
    assert pick_block([(FLOOR - 5, 10), (FLOOR + BLOCK, 3 * BLOCK)]) == FLOOR + 4 * BLOCK
    assert pick_block([(0, 1 << 31)]) == 1 << 31
    assert pick_block([(FLOOR, 0)]) == FLOOR  # an empty range takes nothing
    assert pick_block([], floor=FLOOR + 1) == FLOOR + BLOCK


def test_pick_block_stays_inside_the_ids_this_namespace_names() -> None:
    assert pick_block([], allowed=[(0, 65536)]) is None  # a container's small map
    assert pick_block([], allowed=[(0, 100000), (FLOOR * 2, BLOCK)]) == FLOOR * 2
    assert pick_block([(0, (1 << 32) - 2)]) is None
    assert parse_id_map("         0          0 4294967295\n") == [(0, 4294967295)]
    assert parse_id_map("0 100000 65536\n65536 5 1\nbad\n") == [(0, 65536), (65536, 1)]


def test_entry_line_starts_on_a_line_of_its_own() -> None:
    assert entry_line(FLOOR, "") == "coop:1073741824:65536\n"
    assert entry_line(FLOOR, "a:1:2\n") == "coop:1073741824:65536\n"
    assert entry_line(FLOOR, "a:1:2") == "\ncoop:1073741824:65536\n"


def test_reservation_appends_once_and_keeps_other_lines(tmp_path: Path) -> None:
    subuid, subgid = tmp_path / "subuid", tmp_path / "subgid"
    subuid.write_text(f"alice:100000:65536\nbob:{FLOOR}:70000")  # no final newline
    subuid.chmod(0o640)
    got = coop_ranges(subuid, subgid)  # subgid is missing: created
    assert got == ((FLOOR + 2 * BLOCK, BLOCK), (FLOOR + 2 * BLOCK, BLOCK))
    assert subuid.read_text() == (f"alice:100000:65536\nbob:{FLOOR}:70000\n"
                                  f"coop:{FLOOR + 2 * BLOCK}:{BLOCK}\n")
    assert subgid.read_text() == f"coop:{FLOOR + 2 * BLOCK}:{BLOCK}\n"
    assert subuid.stat().st_mode & 0o777 == 0o640
    assert subgid.stat().st_mode & 0o777 == 0o644
    assert coop_ranges(subuid, subgid) == got
    assert subuid.read_text().count("coop:") == 1


def test_reservation_fills_only_the_file_without_an_entry(tmp_path: Path) -> None:
    subuid, subgid = tmp_path / "subuid", tmp_path / "subgid"
    subuid.write_text(f"coop:{FLOOR}:{BLOCK}\n")
    subgid.write_text("")
    assert coop_ranges(subuid, subgid) == ((FLOOR, BLOCK), (FLOOR + BLOCK, BLOCK))
    with pytest.raises(NamespaceError, match="no 'coop' entry"):
        coop_ranges(tmp_path / "none", subgid, reserve=False)


def test_concurrent_reservations_reserve_one_range(tmp_path: Path) -> None:
    """The flock makes the read-pick-append of each reserver atomic."""
    subuid, subgid = tmp_path / "subuid", tmp_path / "subgid"
    results: list[object] = []

    def reserve() -> None:
        results.append(coop_ranges(subuid, subgid))

    threads = [threading.Thread(target=reserve) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(set(map(repr, results))) == 1 and len(results) == 8
    assert subuid.read_text().count("coop:") == 1 and subgid.read_text().count("coop:") == 1


def test_an_unwritable_file_is_one_line(tmp_path: Path) -> None:
    missing_dir = tmp_path / "no" / "subuid"
    with pytest.raises(NamespaceError, match=r"cannot reserve an id range .*No such file"):
        coop_ranges(missing_dir, tmp_path / "subgid")


def test_a_range_that_would_give_root_or_someone_else_its_ids_is_refused() -> None:
    others = [("alice", 100000, 65536), ("coop", FLOOR, BLOCK)]
    assert range_refusal((FLOOR, BLOCK), others, [0, 1000]) is None
    assert range_refusal((0, BLOCK), others, []) == "it starts at 0 (host root)"
    assert range_refusal((FLOOR, 1000), others, []) == (
        f"it holds 1000 ids, fewer than the {BLOCK} a sandbox maps")
    assert range_refusal((100000, BLOCK), others, []) == "it overlaps alice's range 100000:65536"
    assert range_refusal((FLOOR, BLOCK), others, [FLOOR + 7]) == (
        f"it holds uid {FLOOR + 7}, an account of this machine")


def test_a_bad_entry_of_coops_is_refused_in_one_line(tmp_path: Path) -> None:
    """An entry filed by hand (or by someone else) is checked at every use, not only when
    coop reserves one: ``coop:0:65536`` would map root's sandboxes to host root again."""
    subuid, subgid = tmp_path / "subuid", tmp_path / "subgid"
    subuid.write_text("coop:0:65536\n")
    subgid.write_text(f"coop:{FLOOR}:{BLOCK}\n")
    with pytest.raises(NamespaceError, match=r"subuid: the 'coop' entry 0:65536 cannot hold "
                                             r"root's sandboxes: it starts at 0 \(host root\)$"):
        coop_ranges(subuid, subgid)


def test_a_login_named_coop_stops_root_from_using_the_range(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """shadow's newuidmap hands a user the ranges filed under its name: with a login named
    ``coop`` (made before or after the reservation), that user could act with the ids of
    root's sandboxes. The account database is the machine's, so it is stood in for."""
    subuid, subgid = tmp_path / "subuid", tmp_path / "subgid"
    subuid.write_text(f"coop:{FLOOR}:{BLOCK}\n")
    subgid.write_text(f"coop:{FLOOR}:{BLOCK}\n")
    assert coop_ranges(subuid, subgid) == ((FLOOR, BLOCK), (FLOOR, BLOCK))
    account = pwd.struct_passwd(("coop", "x", 1234, 1234, "", "/home/coop", "/bin/sh"))
    monkeypatch.setattr(subids.pwd, "getpwnam",
                        lambda name: account if name == "coop" else pwd.getpwnam(name))
    with pytest.raises(NamespaceError, match="a user named 'coop' exists on this machine"):
        coop_ranges(subuid, subgid)
