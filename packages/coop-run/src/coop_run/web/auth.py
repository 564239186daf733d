"""Who may use the web server (SPEC 8, 12): tokens, and the Host and Origin checks; pure.

Two tokens: the full one, and a read-only one for showing a session to someone else.
A request presents one as ``?token=``, ``Authorization: Bearer`` or the cookie that a
first valid visit sets (in that order: an explicit token wins over the cookie), and it is
compared with both in constant time. The Host check refuses names the server was not
bound for (DNS rebinding: a page on ``evil.example`` that resolves to 127.0.0.1 sends
``Host: evil.example``); the Origin check refuses a browser page of another origin
(WebSocket upgrades, which browsers do not guard, and requests that change something).
"""

from __future__ import annotations

import hmac
import ipaddress
import re
import secrets
from collections.abc import Callable, Iterable, Mapping
from typing import Final, Literal
from urllib.parse import urlsplit

TOKEN_BYTES: Final = 24  # 192 random bits, as 32 URL-safe characters
MIN_TOKEN: Final = 16
MAX_TOKEN: Final = 256
COOKIE: Final = "coop_token"
_TOKEN_CHARS = re.compile(r"[A-Za-z0-9._~-]+")
_HOST_NAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                        r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?")

Access = Literal["full", "read-only"]
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def token_problem(token: str) -> str | None:
    """Why ``token`` (given with ``--token``) cannot be used, or None: it goes into URLs
    and a cookie as it is, and must not be guessable."""
    if not MIN_TOKEN <= len(token) <= MAX_TOKEN:
        return f"a token must be {MIN_TOKEN} to {MAX_TOKEN} characters long"
    if not _TOKEN_CHARS.fullmatch(token):
        return "a token may hold only letters, digits and - . _ ~"
    return None


def host_problem(host: str) -> str | None:
    """Why ``host`` (``--host``) is not an address or a host name, or None."""
    if parse_address(host) is not None:
        return None
    if len(host) <= 253 and _HOST_NAME.fullmatch(host):
        return None
    return f"{host[:60]!r} is neither an IP address nor a host name"


def parse_address(text: str) -> Address | None:
    """An IP address written as in a URL's host (``[::1]`` or ``::1``), or None."""
    text = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


class Tokens:
    """The server's two tokens."""

    __slots__ = ("full", "read_only")

    def __init__(self, full: str, read_only: str) -> None:
        if full == read_only:
            raise ValueError("the read-only token must differ from the full one")
        self.full = full
        self.read_only = read_only

    def access(self, presented: str | None) -> Access | None:
        """What ``presented`` grants; both are compared, in constant time, whatever it is."""
        if not presented:
            return None
        given = presented.encode()
        full = hmac.compare_digest(given, self.full.encode())
        read_only = hmac.compare_digest(given, self.read_only.encode())
        if full:
            return "full"
        return "read-only" if read_only else None

    def redact(self, text: str) -> str:
        """``text`` with either token replaced by ``***`` (log lines, messages)."""
        for token in (self.full, self.read_only):
            if token in text:
                text = text.replace(token, "***")
        return text


Source = Literal["query", "header", "cookie"]


def presented_token(query: Mapping[str, str], authorization: str | None,
                    cookies: Mapping[str, str]) -> tuple[str | None, Source | None]:
    """The token a request presents and where: ``?token=``, else a Bearer header, else
    the cookie."""
    token = query.get("token")
    if token:
        return token, "query"
    if authorization:
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip(), "header"
    token = cookies.get(COOKIE)
    if token:
        return token, "cookie"
    return None, None


def split_host(value: str) -> tuple[str, int | None] | None:
    """A ``Host`` header as (name or address, port); None when malformed."""
    value = value.strip()
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return None
        name, rest = value[1:end], value[end + 1:]
        if rest and not rest.startswith(":"):
            return None
        port_text = rest[1:]
    else:
        name, _, port_text = value.rpartition(":") if value.count(":") == 1 else (value, "", "")
    if port_text:
        if not port_text.isdigit() or int(port_text) > 65535:
            return None
        port: int | None = int(port_text)
    else:
        port = None
    return (name.lower().rstrip("."), port) if name else None


class HostCheck:
    """Which ``Host`` headers the server answers: the names and addresses it was bound
    for. A loopback server: ``localhost`` and loopback addresses. A server on one
    address: that address (and the name it was given). On every address (``0.0.0.0``,
    ``::``): any of this machine's addresses, its host name, ``localhost``."""

    def __init__(self, bind_host: str, *, hostname: str,
                 local_addresses: Callable[[], Iterable[Address]]) -> None:
        self._local_addresses = local_addresses
        self._known: set[Address] = set()
        bound = parse_address(bind_host)
        self.wildcard = bound is not None and bound.is_unspecified
        self.loopback = bound is not None and bound.is_loopback
        self.bound = bound
        self.names = {"localhost"}
        if bound is None:
            self.names.add(bind_host.lower().rstrip("."))
        if not self.loopback and hostname:
            short = hostname.lower().rstrip(".")
            self.names |= {short, f"{short}.local"}

    def allows(self, host_header: str | None) -> bool:
        if not host_header:
            return False
        parsed = split_host(host_header)
        if parsed is None:
            return False
        name, _port = parsed
        address = parse_address(name)
        if address is None:
            return name in self.names
        if address.is_loopback:
            return self.loopback or self.wildcard or self.bound is None
        if self.wildcard:
            if address not in self._known:  # addresses come and go (DHCP): look again
                self._known = set(self._local_addresses())
            return address in self._known
        return address == self.bound


def same_origin(origin: str, host_header: str | None) -> bool:
    """Whether a browser's ``Origin`` is the server itself (as the ``Host`` names it)."""
    try:
        parts = urlsplit(origin)
        port = parts.port
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or not parts.hostname or not host_header:
        return False
    host = split_host(host_header)
    if host is None:
        return False
    default = 443 if parts.scheme == "https" else 80
    return (parts.hostname.lower().rstrip("."), port or default) == (host[0], host[1] or 80)
