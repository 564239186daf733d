"""Image references (``[registry/]repository[:tag][@digest]``) and Docker Hub normalisation.

Pure string logic, no I/O: the Coopfile validates ``base.image`` with it before anything
runs, and the registry client gets a fully qualified ``Reference`` so that it never has
to guess which host a short name like ``alpine:3`` lives on.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, replace

from coop_build.errors import InvalidReferenceError

HOST_IMAGE = "host"
"""``base.image`` value meaning the host's own ``/usr``, ``/bin``, ``/lib*``, ``/etc``."""

DOCKER_HUB = "registry-1.docker.io"
"""Where Docker Hub serves the distribution API (``docker.io`` is only a web alias)."""

_DOCKER_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", DOCKER_HUB})
DEFAULT_TAG = "latest"

# The grammar of github.com/distribution/reference, restricted to ASCII.
_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*", re.ASCII)
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}", re.ASCII)
_DIGEST_HEX = {"sha256": 64, "sha512": 128}
_HEX = re.compile(r"[0-9a-f]+", re.ASCII)
_HOST_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?", re.ASCII)
_PORT = re.compile(r"[0-9]{1,5}", re.ASCII)
_MAX_NAME = 255


@dataclass(frozen=True)
class Reference:
    """A fully qualified image reference.

    ``tag`` is ``"latest"`` when the text named neither tag nor digest, ``None`` when it
    named only a digest; a reference that names both keeps both (the digest wins when
    pulling, the tag stays for display). A repository-only reference (from
    ``parse_repository``) has neither.
    """

    registry: str
    repository: str
    tag: str | None
    digest: str | None

    @property
    def name(self) -> str:
        """``registry/repository`` without tag or digest."""
        return f"{self.registry}/{self.repository}"

    @property
    def target(self) -> str:
        """What to ask the registry's manifest endpoint for: the digest, else the tag."""
        return self.digest or self.tag or DEFAULT_TAG

    def with_tag(self, tag: str) -> Reference:
        """The same repository at another tag; the digest is dropped (it named other content)."""
        if not _TAG.fullmatch(tag):
            raise InvalidReferenceError(f"invalid image tag {_quote(tag)}")
        return replace(self, tag=tag, digest=None)

    def __str__(self) -> str:
        text = self.name
        if self.tag is not None:
            text += f":{self.tag}"
        if self.digest is not None:
            text += f"@{self.digest}"
        return text


def _quote(text: str) -> str:
    """Double-quoted, escaped and shortened: keeps any input on one line."""
    shown = text if len(text) <= 200 else text[:200] + "..."
    return '"' + shown.encode("unicode_escape").decode("ascii").replace('"', '\\"') + '"'


def _fail(text: str, problem: str) -> InvalidReferenceError:
    return InvalidReferenceError(f"invalid image reference {_quote(text)}: {problem}")


def _valid_registry(host: str) -> bool:
    """``host[:port]`` where host is a DNS name, IPv4 address or ``[IPv6]``."""
    if host.startswith("["):
        end = host.find("]")
        if end < 0:
            return False
        try:
            ipaddress.IPv6Address(host[1:end])
        except ValueError:
            return False
        rest = host[end + 1 :]
        return rest == "" or (rest.startswith(":") and bool(_PORT.fullmatch(rest[1:])))
    name, sep, port = host.partition(":")
    if sep and not _PORT.fullmatch(port):
        return False
    return all(_HOST_LABEL.fullmatch(label) for label in name.split("."))


def _is_registry(component: str) -> bool:
    """Docker's rule: the first path component names a host if it looks like one."""
    return (
        "." in component
        or ":" in component
        or component == "localhost"
        or component.startswith("[")
    )


def _split(text: str) -> tuple[str, str, str | None, str | None]:
    """Split and validate; returns (registry, repository, tag, digest) as written."""
    if not text:
        raise _fail(text, "empty")
    if any(ch.isspace() for ch in text):
        raise _fail(text, "must not contain whitespace")
    name, at, digest_text = text.partition("@")
    digest: str | None = None
    if at:
        algorithm, colon, hex_part = digest_text.partition(":")
        want = _DIGEST_HEX.get(algorithm)
        if not colon or want is None:
            raise _fail(text, "digest must be sha256:<64 hex digits> or sha512:<128 hex digits>")
        if len(hex_part) != want or not _HEX.fullmatch(hex_part):
            raise _fail(text, f"digest must be {algorithm}:<{want} lowercase hex digits>")
        digest = digest_text
    tag: str | None = None
    last_slash = name.rfind("/")
    tag_colon = name.rfind(":")
    if tag_colon > last_slash:
        name, tag = name[:tag_colon], name[tag_colon + 1 :]
        if not _TAG.fullmatch(tag):
            raise _fail(
                text,
                "tag must be 1-128 letters, digits, '_', '.' or '-', not starting with '.' or '-'",
            )
    if not name:
        raise _fail(text, "missing repository name")
    first, slash, rest = name.partition("/")
    if slash and _is_registry(first):
        registry, repository = first, rest
        if not _valid_registry(registry):
            raise _fail(text, f"invalid registry host {_quote(registry)}")
    else:
        registry, repository = DOCKER_HUB, name
    if registry.lower() in _DOCKER_HUB_ALIASES:
        registry = DOCKER_HUB
        if "/" not in repository:
            repository = f"library/{repository}"
    if not repository:
        raise _fail(text, "missing repository name")
    for component in repository.split("/"):
        if _COMPONENT.fullmatch(component):
            continue
        if _COMPONENT.fullmatch(component.lower()):
            raise _fail(text, "repository name must be lowercase")
        if not component:
            raise _fail(text, "empty path component in repository name")
        raise _fail(
            text,
            f"invalid repository name component {_quote(component)} "
            "(lowercase letters and digits, separated by '.', '_', '__' or '-')",
        )
    if len(registry) + 1 + len(repository) > _MAX_NAME:
        raise _fail(text, f"repository name longer than {_MAX_NAME} characters")
    return registry, repository, tag, digest


def parse_reference(text: str) -> Reference:
    """Parse ``[registry/]repository[:tag][@digest]``, normalising Docker Hub names.

    ``alpine`` -> ``registry-1.docker.io/library/alpine:latest``; a first component with
    a ``.`` or ``:``, ``localhost`` or ``[IPv6]`` is a registry host. Raises
    ``InvalidReferenceError`` with a one-line message naming the text and the problem.
    """
    registry, repository, tag, digest = _split(text)
    if tag is None and digest is None:
        tag = DEFAULT_TAG
    return Reference(registry=registry, repository=repository, tag=tag, digest=digest)


def parse_repository(text: str) -> Reference:
    """Parse a repository without tag or digest (e.g. ``[build] prebuilt``).

    The result has ``tag`` and ``digest`` both ``None``; ``with_tag(build_key)`` makes it
    a reference to one prebuilt image.
    """
    registry, repository, tag, digest = _split(text)
    if tag is not None or digest is not None:
        raise _fail(text, "must name a repository without tag or digest")
    return Reference(registry=registry, repository=repository, tag=None, digest=None)


def is_loopback_registry(registry: str) -> bool:
    """True for ``localhost``, ``127.0.0.0/8`` and ``[::1]`` (any port): http is fine there."""
    host = registry
    if host.startswith("["):
        host = host[1 : host.find("]")] if "]" in host else host[1:]
    elif host.count(":") == 1:
        host = host.partition(":")[0]
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
