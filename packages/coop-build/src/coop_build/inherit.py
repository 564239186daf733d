"""What build steps and sessions inherit from the invoking environment, apart from the
TLS trust (``tlstrust``): the proxy variables, and what a proxy URL names.

Build steps get the proxies and the package mirrors (``build.PASSTHROUGH_VARS``);
sessions get what ``[network] inherit`` names (``DEFAULT_INHERIT`` when unset): the
proxies but not the mirrors (a mirror decides what a build installs; a user who wants
one in a session says so in ``[env]``). A proxy URL may carry ``user:password``:
``masked`` is the only form of it coop shows. Pure, and light (no pydantic): the CLI and
the trust check import it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, get_args

PROXY_VARS = ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY")
"""The proxy variables, in both spellings programs read."""
PROXY_URL_VARS = tuple(name for name in PROXY_VARS if name.lower() != "no_proxy")
MIRROR_VARS = ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_TRUSTED_HOST", "npm_config_registry")
"""Package mirrors: build steps only."""
MASK = "***"
InheritName = Literal["proxy", "tls"]
"""What ``[network] inherit`` may name: the proxy variables, the TLS trust (``tlstrust``)."""
INHERIT_NAMES: tuple[InheritName, ...] = get_args(InheritName)
DEFAULT_INHERIT: dict[str, tuple[InheritName, ...]] = {
    "veth": INHERIT_NAMES, "host": INHERIT_NAMES, "none": ()}
"""What a session inherits when ``[network].inherit`` is unset, by network mode: an agent
with a network gets the user's proxies and TLS trust."""

_DEFAULT_PORTS = {"http": 80, "https": 443, "socks4": 1080, "socks4a": 1080,
                  "socks5": 1080, "socks5h": 1080}


@dataclass(frozen=True)
class ProxyAddress:
    """Where a proxy URL points: ``host`` as written (a name, an IPv4 address, or an IPv6
    address without its brackets), lower-cased, and the port (the scheme's default when
    the URL names none)."""

    host: str
    port: int


def proxy_variables(environ: Mapping[str, str]) -> dict[str, str]:
    """The proxy variables ``environ`` sets (empty ones left out)."""
    return {name: environ[name] for name in PROXY_VARS if environ.get(name)}


def _split_scheme(url: str) -> tuple[str, str, str]:
    """(scheme, separator, rest): a URL without ``://`` is an http proxy's ``host:port``."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return "http", "", url
    return scheme.lower(), sep, rest


def masked(url: str) -> str:
    """``url`` with everything before its last ``@`` (the user and password) replaced by
    ``***``; a URL without ``@`` as it is. Errs on hiding: a stray ``@`` further on
    hides more, never less."""
    scheme, sep, rest = _split_scheme(url.strip())
    if "@" not in rest:
        return url.strip()
    host = rest.rpartition("@")[2]
    return f"{scheme}{sep}{MASK}@{host}" if sep else f"{MASK}@{host}"


def proxy_address(url: str) -> ProxyAddress | None:
    """The host and port ``url`` names, or None when it is not a proxy URL coop
    understands (an unknown scheme, no host, a bad port)."""
    scheme, _, rest = _split_scheme(url.strip())
    default = _DEFAULT_PORTS.get(scheme)
    if default is None:
        return None
    for stop in "/?#":
        rest = rest.split(stop, 1)[0]
    hostport = rest.rpartition("@")[2]
    if hostport.startswith("["):
        host, bracket, after = hostport[1:].partition("]")
        if not bracket or (after and not after.startswith(":")):
            return None
        port_text = after[1:] if after else ""
    else:
        host, _, port_text = hostport.partition(":")
    if not host:
        return None
    if not port_text:
        return ProxyAddress(host.lower(), default)
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        return None
    return ProxyAddress(host.lower(), int(port_text))
