"""Text for ``coop ls`` and the session line of ``coop status`` (seed 11.2, 11.3).

Pure functions over the session dicts the daemon's ``ls`` returns (SPEC 6). They stay
cheap to import (json only) because ``coop ls`` must start nearly as fast as Python.

The seed's ``coop ls`` sample is not quite aligned (its rows drift a column from the
header); we print the aligned version of it: every column is as wide as the seed's header
makes it, or wider when a value needs it, with at least two spaces between columns.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

# (header, minimum width of the values) so that the header reads exactly as the seed's:
# "SESSION    WORKSPACE                STATE     PTYS   CLIENTS        AGE".
_COLUMNS: tuple[tuple[str, int], ...] = (
    ("SESSION", 9),
    ("WORKSPACE", 23),
    ("STATE", 8),
    ("PTYS", 5),
    ("CLIENTS", 13),
    ("AGE", 0),
)
_GAP = 2
_CLIENT_KINDS = (("local_clients", "local"), ("web_clients", "web"), ("tunnel_clients", "tunnel"))

# Key order of ``coop ls --json``: SPEC 6's order, then anything else sorted.
_SESSION_KEYS = (
    "name",
    "workspace",
    "pid",
    "created",
    "state",
    "ptys",
    "web_clients",
    "local_clients",
    "tunnel_clients",
)
_PTY_KEYS = ("id", "role", "command", "state", "attention")


def format_elapsed(seconds: float) -> str:
    """A session's age: ``42s``, ``15m``, ``2h 15m``, ``3d 4h``; zero minor units dropped.

    Two units at most, as the seed shows; a negative span (clock skew) reads ``0s``.
    """
    total = int(max(0.0, seconds))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h" if hours else f"{days}d"
    if hours:
        return f"{hours}h {minutes}m" if minutes else f"{hours}h"
    if minutes:
        return f"{minutes}m"
    return f"{secs}s"


def shorten_home(path: str, home: str) -> str:
    """``path`` with the home directory written ``~``, only at a path-component boundary."""
    base = home.rstrip("/")
    if not base:
        return path  # no home, or home is "/": nothing sensible to shorten
    if path == base or path == base + "/":
        return "~"
    if path.startswith(base + "/"):
        return "~" + path[len(base) :]
    return path


def format_clients(session: Mapping[str, Any]) -> str:
    """``0``, or the non-zero kinds in the order local, web, tunnel: ``2 web, 1 tunnel``."""
    parts = []
    for key, label in _CLIENT_KINDS:
        count = _count(session.get(key))
        if count:
            parts.append(f"{count} {label}")
    return ", ".join(parts) if parts else "0"


def _count(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        return 0
    return max(0, value)


def _ls_row(session: Mapping[str, Any], now: float, home: str) -> tuple[str, ...]:
    ptys = session.get("ptys")
    created = session.get("created")
    if isinstance(created, (int, float)) and not isinstance(created, bool):
        age = format_elapsed(now - created)
    else:
        age = "-"
    return (
        str(session.get("name", "-")),
        shorten_home(str(session.get("workspace", "-")), home),
        str(session.get("state", "-")),
        str(len(ptys)) if isinstance(ptys, list) else "-",
        format_clients(session),
        age,
    )


def format_ls(sessions: Sequence[Mapping[str, Any]], *, now: float, home: str) -> str:
    """The ``coop ls`` table, header first, one line per session in the order given.

    No trailing newline and no trailing spaces; with no sessions it is the header alone.
    """
    rows = [tuple(header for header, _ in _COLUMNS)]
    rows.extend(_ls_row(session, now, home) for session in sessions)
    widths = [
        max(minimum, *(len(row[i]) for row in rows)) for i, (_, minimum) in enumerate(_COLUMNS)
    ]
    lines = []
    for row in rows:
        cells = [cell.ljust(widths[i] + _GAP) for i, cell in enumerate(row[:-1])]
        lines.append(("".join(cells) + row[-1]).rstrip())
    return "\n".join(lines)


def _ordered(mapping: Mapping[str, Any], keys: Sequence[str]) -> dict[str, Any]:
    out = {key: mapping[key] for key in keys if key in mapping}
    out.update((key, mapping[key]) for key in sorted(mapping) if key not in out)
    return out


def format_ls_json(sessions: Sequence[Mapping[str, Any]]) -> str:
    """``coop ls --json``: the daemon's session dicts as a JSON array, keys in a fixed order.

    Values are passed through untouched (workspace unshortened, ``created`` in Unix
    seconds) so scripts get what the IPC says. No trailing newline.
    """
    out = []
    for session in sessions:
        item = _ordered(session, _SESSION_KEYS)
        ptys = item.get("ptys")
        if isinstance(ptys, list):
            item["ptys"] = [
                _ordered(pty, _PTY_KEYS) if isinstance(pty, Mapping) else pty for pty in ptys
            ]
        out.append(item)
    return json.dumps(out, indent=2, ensure_ascii=False)


def format_sessions_summary(sessions: Sequence[Mapping[str, Any]]) -> str:
    """The value of ``coop status``'s ``Sessions:`` line: ``3 running``.

    Sessions in another state follow, by state name: ``2 running, 1 stopping``.
    """
    counts: dict[str, int] = {}
    for session in sessions:
        state = str(session.get("state", "unknown"))
        counts[state] = counts.get(state, 0) + 1
    parts = [f"{counts.pop('running', 0)} running"]
    parts.extend(f"{counts[state]} {state}" for state in sorted(counts))
    return ", ".join(parts)
