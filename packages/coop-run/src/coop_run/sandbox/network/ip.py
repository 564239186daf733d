"""The ``ip`` runner: batches (one process per step) and JSON queries."""

from __future__ import annotations

import ipaddress
import json
from typing import Any

from coop_run.errors import NetworkError

from ._tools import in_netns, run


def batch(commands: list[str], *, ns_pid: int | None = None, force: bool = False) -> None:
    """``ip -batch -`` (in the netns of ``ns_pid`` if given); ``force`` ignores errors."""
    argv = ["ip", *(["-force"] if force else []), "-batch", "-"]
    if ns_pid is not None:
        argv = in_netns(ns_pid, argv)
    run(argv, stdin="\n".join(commands) + "\n", check=not force)


def query(*args: str) -> list[dict[str, Any]]:
    """``ip -json ARGS`` parsed; an empty list when ip prints nothing."""
    _, out, _ = run(["ip", "-json", *args])
    if not out.strip():
        return []
    try:
        data = json.loads(out)
    except json.JSONDecodeError as exc:
        raise NetworkError(f"ip -json {' '.join(args)} printed invalid JSON") from exc
    if not isinstance(data, list):
        raise NetworkError(f"ip -json {' '.join(args)} printed something other than a list")
    return [item for item in data if isinstance(item, dict)]


def link_names() -> set[str]:
    """Names of the links in our network namespace."""
    return {str(link.get("ifname")) for link in query("link", "show")}


def host_ipv4() -> tuple[list[ipaddress.IPv4Network], list[ipaddress.IPv4Address]]:
    """The host's IPv4 networks (on-link subnets) and its own IPv4 addresses."""
    nets: list[ipaddress.IPv4Network] = []
    addrs: list[ipaddress.IPv4Address] = []
    for link in query("-4", "addr", "show"):
        for info in link.get("addr_info", []):
            if not isinstance(info, dict) or info.get("family") != "inet":
                continue
            try:
                iface = ipaddress.IPv4Interface(f"{info['local']}/{info['prefixlen']}")
            except (KeyError, ValueError):
                continue
            addrs.append(iface.ip)
            nets.append(iface.network)
    return nets, addrs


def ipv4_routes() -> list[ipaddress.IPv4Network]:
    """Destinations of the host's IPv4 routes in every table except default routes."""
    found: list[ipaddress.IPv4Network] = []
    for route in query("-4", "route", "show", "table", "all"):
        dst = route.get("dst")
        if not isinstance(dst, str) or dst == "default":
            continue
        try:
            net = ipaddress.IPv4Network(dst, strict=False)
        except ValueError:
            continue
        if net.prefixlen > 0:
            found.append(net)
    return found
