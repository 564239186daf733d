"""The ``nft`` runner: load a ruleset text, delete tables, list our tables."""

from __future__ import annotations

import json

from coop_run.errors import NetworkError

from ._tools import in_netns, run


def apply(text: str, *, ns_pid: int | None = None) -> None:
    """Loads ``text`` atomically with ``nft -f -`` (in the netns of ``ns_pid`` if given)."""
    argv = ["nft", "-f", "-"]
    if ns_pid is not None:
        argv = in_netns(ns_pid, argv)
    run(argv, stdin=text)


def delete_tables(tables: list[tuple[str, str]]) -> None:
    """Deletes (family, name) tables that exist; missing ones are not an error."""
    present = set(list_tables())
    script = "".join(f"delete table {fam} {name}\n" for fam, name in tables
                     if (fam, name) in present)
    if script:
        run(["nft", "-f", "-"], stdin=script)


def list_tables() -> list[tuple[str, str]]:
    """(family, name) of every table in our network namespace."""
    _, out, _ = run(["nft", "-j", "list", "tables"])
    try:
        data = json.loads(out) if out.strip() else {}
    except json.JSONDecodeError as exc:
        raise NetworkError("nft -j list tables printed invalid JSON") from exc
    found: list[tuple[str, str]] = []
    for item in data.get("nftables", []) if isinstance(data, dict) else []:
        table = item.get("table") if isinstance(item, dict) else None
        if isinstance(table, dict):
            found.append((str(table.get("family")), str(table.get("name"))))
    return found
