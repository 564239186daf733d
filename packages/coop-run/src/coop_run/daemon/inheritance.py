"""What a session inherits from the environment of the ``coop`` that starts it
(``[network] inherit``, SPEC 13): the proxy variables, and the TLS trust variables with
the files they name bound read-only under ``/run/coop/trust/N/`` (``coop_build.tlstrust``,
as build steps get them). The values come from the client (``create``'s ``env``), never
from the daemon's own environment.

A proxy URL may hold ``user:password``, like a ``$VAR`` secret: it reaches the session's
environment and nothing else. The summary ``coop status`` shows names the variables,
shows each proxy URL masked (``coop_build.inherit.masked``) and each file bound.

In ``veth`` the session refuses the host's loopback and LAN, where proxies often are:
each inherited proxy's address and port is handed to the network, which opens exactly
that (``sandbox.network``: the host's 127.0.0.1:PORT forwarded to the session's own
127.0.0.1:PORT, any other refused address opened for that TCP port only). A proxy named
by a host name is resolved (IPv4) when the session starts.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from coop_build.inherit import PROXY_URL_VARS, ProxyAddress, masked, proxy_address, proxy_variables
from coop_build.paths import display_path
from coop_build.tlstrust import (
    SESSION_TRUST_DIR,
    SESSIONS,
    InheritedTrust,
    inherit_trust,
    trust_variables,
)
from coop_run.sandbox.network.base import DNS_PORT

logger = logging.getLogger(__name__)

RESOLVE_TIMEOUT = 2.0  # seconds for a proxy's host name at session start

Endpoint = tuple[str, int]  # (IPv4 address or host name, TCP port)


@dataclass(frozen=True)
class Inheritance:
    """What one session inherits. ``env`` may hold secrets (a proxy's password): it goes
    into the session's environment only, never into a log, a record or a message."""

    env: dict[str, str]
    binds: tuple[tuple[str, str, bool], ...] = ()  # (host real path, inside, is a dir)
    endpoints: tuple[Endpoint, ...] = ()  # what the network opens (veth); names resolved later
    summary: tuple[str, ...] = ()  # for coop status: names, masked URLs, bound files
    warnings: tuple[str, ...] = ()


def is_ipv4(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return True


def proxy_endpoint(address: ProxyAddress) -> Endpoint | None:
    """Where a ``veth`` session is given the proxy: ``localhost`` is 127.0.0.1; an IPv6
    address is never reachable (sessions have no IPv6)."""
    host = "127.0.0.1" if address.host == "localhost" else address.host
    if ":" in host:
        return None
    return host, address.port


def reach_note(address: ProxyAddress | None, mode: str) -> str:
    """How a session of ``mode`` reaches the proxy at ``address``, said in ``coop status``."""
    if mode == "host":
        return ""
    if mode == "none":
        return " (not reachable: no network)"
    if address is None:
        return " (not understood: nothing opened for it)"
    endpoint = proxy_endpoint(address)
    if endpoint is None:
        return " (not reachable from veth: sessions have no IPv6)"
    host, port = endpoint
    if not is_ipv4(host):
        return f" (veth: port {port} of its IPv4 addresses opened)"
    ip = ipaddress.IPv4Address(host)
    if ip.is_loopback:
        if host != "127.0.0.1" or port == DNS_PORT:
            return (" (not reachable from veth: only the host's 127.0.0.1 is forwarded, "
                    "port 53 excepted)")
        return f" (veth: the host's 127.0.0.1:{port} forwarded to the session's own)"
    if ip.is_global:
        return ""
    return f" (veth: {host}:{port} opened)"


def plan_inheritance(names: Sequence[str], mode: str, client_env: Mapping[str, str],
                     trust: InheritedTrust | None, *,
                     environ: Mapping[str, str] | None = None) -> Inheritance:
    """The session's inheritance from what the client sent (``client_env``) and, when
    ``"tls"`` is inherited, the trust planned from it (``trust``). Pure.

    ``environ`` (``HOME``) shortens the paths shown.
    """
    env: dict[str, str] = {}
    summary: list[str] = []
    endpoints: dict[Endpoint, None] = {}
    if "proxy" in names:
        proxies = proxy_variables(client_env)
        env.update(proxies)
        for name, value in proxies.items():
            if name not in PROXY_URL_VARS:
                summary.append(name)
                continue
            address = proxy_address(value)
            summary.append(f"{name}={masked(value)}{reach_note(address, mode)}")
            endpoint = None if address is None else proxy_endpoint(address)
            if mode == "veth" and endpoint is not None:
                endpoints[endpoint] = None
    binds: list[tuple[str, str, bool]] = []
    warnings: list[str] = []
    if "tls" in names and trust is not None:
        env.update(trust.env)
        binds = [(real, inside, real in trust.directories) for real, inside in trust.binds]
        source = {inside: real for real, inside in trust.binds}
        for name, value in trust.env.items():
            shown = ", ".join(f"{display_path(Path(source[p]), environ)} at {p}"
                              for p in value.split(":"))
            summary.append(f"{name}: {shown} (read-only)")
        warnings += trust.warnings
    return Inheritance(env=env, binds=tuple(binds), endpoints=tuple(endpoints),
                       summary=tuple(summary), warnings=tuple(warnings))


def session_trust(client_env: Mapping[str, str], *, home: str | None,
                  coop_home: Path) -> InheritedTrust:
    """The TLS trust a session gets from the client's variables; the user's npmrc is
    found from the daemon's ``HOME`` (the same user's). Raises InheritedPathError."""
    environ = trust_variables(client_env)
    if home:
        environ["HOME"] = home
    return inherit_trust(environ, coop_home=coop_home, inside=SESSION_TRUST_DIR,
                         audience=SESSIONS)


async def resolve_endpoints(endpoints: Sequence[Endpoint], timeout: float = RESOLVE_TIMEOUT
                            ) -> tuple[list[Endpoint], list[str]]:
    """``endpoints`` with every host name replaced by its IPv4 addresses, and a warning
    for each name that did not resolve within ``timeout`` (its proxy is not opened)."""
    loop = asyncio.get_running_loop()
    out: dict[Endpoint, None] = {}
    warnings: list[str] = []
    for host, port in endpoints:
        if is_ipv4(host):
            out[(host, port)] = None
            continue
        try:
            found = await asyncio.wait_for(
                loop.getaddrinfo(host, port, family=socket.AF_INET, type=socket.SOCK_STREAM),
                timeout)
        except (OSError, TimeoutError) as exc:
            reason = "timed out" if isinstance(exc, TimeoutError) else str(exc)
            warnings.append(f"proxy host {host} does not resolve ({reason}): "
                            "nothing opened for it in the session's network")
            continue
        for *_, sockaddr in found:
            out[(str(sockaddr[0]), port)] = None
    return list(out), warnings
