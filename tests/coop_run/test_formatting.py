"""``coop ls`` / ``coop status`` text, pinned by golden output."""

from __future__ import annotations

import json
from typing import Any

import pytest

from coop_run.cli.formatting import (
    format_clients,
    format_elapsed,
    format_ls,
    format_ls_json,
    format_sessions_summary,
    shorten_home,
)

NOW = 1_800_000_000.0
HOME = "/home/alice"
HEADER = "SESSION    WORKSPACE                STATE     PTYS   CLIENTS        AGE"


def session(
    name: str,
    workspace: str,
    age: float,
    ptys: int = 1,
    *,
    state: str = "running",
    local: int = 0,
    web: int = 0,
    tunnel: int = 0,
) -> dict[str, Any]:
    """A session dict as the daemon's ``ls`` returns it (SPEC 6)."""
    return {
        "name": name,
        "workspace": workspace,
        "pid": 4242,
        "created": NOW - age,
        "state": state,
        "ptys": [
            {
                "id": i,
                "role": "agent" if i == 0 else "shell",
                "command": "claude",
                "state": "running",
            }
            for i in range(ptys)
        ],
        "web_clients": web,
        "local_clients": local,
        "tunnel_clients": tunnel,
    }


SEED = [
    session("nlst", f"{HOME}/github/nlst", 2 * 3600 + 15 * 60 + 7, 2, local=1),
    session("llmq", f"{HOME}/github/llmq", 15 * 60 + 59, 1),
    session("docproc", f"{HOME}/github/docproc", 3 * 86400 + 4 * 3600 + 1, 3, web=2, tunnel=1),
]


def test_header_is_the_seeds() -> None:
    assert format_ls([], now=NOW, home=HOME) == HEADER


def test_one_session() -> None:
    assert format_ls(SEED[1:2], now=NOW, home=HOME) == (
        f"{HEADER}\nllmq       ~/github/llmq            running   1      0              15m"
    )


def test_the_seed_example_aligned() -> None:
    # The seed's own sample drifts by a column; this is its aligned form. "2 web, 1 tunnel"
    # is wider than the seed's CLIENTS column, so that column (and AGE) moves right.
    assert format_ls(SEED, now=NOW, home=HOME) == (
        "SESSION    WORKSPACE                STATE     PTYS   CLIENTS          AGE\n"
        "nlst       ~/github/nlst            running   2      1 local          2h 15m\n"
        "llmq       ~/github/llmq            running   1      0                15m\n"
        "docproc    ~/github/docproc         running   3      2 web, 1 tunnel  3d 4h"
    )


def test_long_names_and_paths_widen_their_columns() -> None:
    rows = [
        session("a-very-long-session-name", "/srv/projects/some/deeply/nested/workspace", 30),
        session("x", HOME, 86400, 0, state="stopping", local=3, web=1),
    ]
    assert format_ls(rows, now=NOW, home=HOME) == (
        "SESSION                   WORKSPACE                                   STATE     "
        "PTYS   CLIENTS         AGE\n"
        "a-very-long-session-name  /srv/projects/some/deeply/nested/workspace  running   "
        "1      0               30s\n"
        "x                         ~                                           stopping  "
        "0      3 local, 1 web  1d"
    )


def test_no_trailing_spaces_and_columns_line_up() -> None:
    table = format_ls(SEED, now=NOW, home=HOME).splitlines()
    assert all(line == line.rstrip() for line in table)
    for header in ("WORKSPACE", "STATE", "PTYS", "CLIENTS", "AGE"):
        column = table[0].index(header)
        assert all(line[column - 2 : column] == "  " and line[column] != " " for line in table)


def test_missing_or_odd_fields_do_not_break_the_table() -> None:
    text = format_ls([{"name": "bare"}], now=NOW, home=HOME)
    assert (
        text.splitlines()[1]
        == "bare       -                        -         -      0              -"
    )


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (-5, "0s"),
        (0, "0s"),
        (59.9, "59s"),
        (60, "1m"),
        (15 * 60 + 59, "15m"),
        (3599, "59m"),
        (3600, "1h"),
        (2 * 3600 + 15 * 60, "2h 15m"),
        (86399, "23h 59m"),
        (86400, "1d"),
        (86400 + 59 * 60, "1d"),
        (3 * 86400 + 4 * 3600 + 30 * 60, "3d 4h"),
        (400 * 86400, "400d"),
    ],
)
def test_format_elapsed(seconds: float, text: str) -> None:
    assert format_elapsed(seconds) == text


@pytest.mark.parametrize(
    ("path", "home", "text"),
    [
        ("/home/alice/github/nlst", "/home/alice", "~/github/nlst"),
        ("/home/alice/github/nlst", "/home/alice/", "~/github/nlst"),
        ("/home/alice", "/home/alice", "~"),
        ("/home/alice/", "/home/alice", "~"),
        ("/home/alicebob/x", "/home/alice", "/home/alicebob/x"),
        ("/srv/x", "/home/alice", "/srv/x"),
        ("/srv/x", "/", "/srv/x"),
        ("/srv/x", "", "/srv/x"),
        ("relative/home/alice", "/home/alice", "relative/home/alice"),
    ],
)
def test_shorten_home(path: str, home: str, text: str) -> None:
    assert shorten_home(path, home) == text


def test_format_clients() -> None:
    assert format_clients({}) == "0"
    assert format_clients({"local_clients": 0, "web_clients": 0, "tunnel_clients": 0}) == "0"
    assert format_clients({"tunnel_clients": 1, "web_clients": 2}) == "2 web, 1 tunnel"
    assert format_clients({"tunnel_clients": 1, "local_clients": 1, "web_clients": 1}) == (
        "1 local, 1 web, 1 tunnel"
    )
    assert format_clients({"local_clients": True, "web_clients": "3"}) == "0"


def test_ls_json_orders_keys_and_keeps_values() -> None:
    scrambled = {
        "tunnel_clients": 1,
        "zz_extra": True,
        "ptys": [{"state": "running", "command": "sh", "role": "shell", "id": 1, "cwd": "/"}],
        "name": "docproc",
        "created": 1700000000.5,
        "workspace": "/home/alice/ünï",
        "state": "running",
        "pid": 7,
        "web_clients": 2,
        "local_clients": 0,
    }
    assert format_ls_json([scrambled]) == (
        "[\n"
        "  {\n"
        '    "name": "docproc",\n'
        '    "workspace": "/home/alice/ünï",\n'
        '    "pid": 7,\n'
        '    "created": 1700000000.5,\n'
        '    "state": "running",\n'
        '    "ptys": [\n'
        "      {\n"
        '        "id": 1,\n'
        '        "role": "shell",\n'
        '        "command": "sh",\n'
        '        "state": "running",\n'
        '        "cwd": "/"\n'
        "      }\n"
        "    ],\n"
        '    "web_clients": 2,\n'
        '    "local_clients": 0,\n'
        '    "tunnel_clients": 1,\n'
        '    "zz_extra": true\n'
        "  }\n"
        "]"
    )
    assert format_ls_json([]) == "[]"
    assert json.loads(format_ls_json(SEED)) == SEED


def test_sessions_summary() -> None:
    assert format_sessions_summary([]) == "0 running"
    assert format_sessions_summary(SEED) == "3 running"
    assert (
        format_sessions_summary(
            [*SEED, {"state": "stopping"}, {"state": "exited"}, {"state": "stopping"}]
        )
        == "3 running, 1 exited, 2 stopping"
    )
